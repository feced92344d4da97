//! The numerical core of disco.
//!
//! Every module except `python` is a pure kernel over slices that returns [`Result`]; the
//! `python` module (behind the default `python` feature) only validates shapes, borrows numpy
//! buffers, releases the interpreter lock around the work and maps errors, so that the kernels
//! can be tested and benchmarked without an interpreter (docs/design.md §1.3).

pub mod consts;
mod dispatch;
pub mod divergence;
pub mod error;
pub mod logspace;
pub mod maxent;
pub mod qrs;
pub mod stderr;
pub mod textmatch;
pub mod vexp;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
