//! Quasi-Rejection Sampling (docs/design.md §7): the accept/reject decision, whole beta
//! trade-off curves from one sort, the beta that gives a target acceptance rate, and the
//! independent Metropolis–Hastings chain QRS is compared against (§8).
//!
//! Samples `x_i ~ q` carry log-ratios `l_i = log P_i - log q_i` (`-inf` where `P = 0`) and,
//! optionally, log-weights `w_i` (samples not drawn from `q`: an enumerated support weighted by
//! `q`, stratified draws); a mean is then `Σ e^{w_i} g_i / Σ e^{w_i}`. With `r_i = e^{l_i}`,
//! `S = Σ ω r`, `S_β = Σ ω min(r, β)`, `W = Σ ω`, `p_i = ω_i r_i / S`, `p_β,i = ω_i min(r_i, β) / S_β`:
//!
//! - `Z_β = S_β / W`, acceptance rate `AR(β) = Z_β / β`;
//! - `KL(p‖p_β) = Σ_{r>β} p_i (l_i - log β) + log(S_β / S)`;
//! - `TV(p, p_β) = Σ_{p > p_β} (p_i - p_β,i) = S_{>t} / S - β Ω_{>t} / S_β` with `t = β S / S_β`;
//! - `JS(p, p_β)`, the standard one in nats (its clipped part has no prefix-sum form, so it costs
//!   O(#{r > β}) per beta);
//! - a feature's moment under `p_β`: `Σ ω min(r, β) f / S_β`.
//!
//! After one sort by `l`, every sum above splits at the position of `log β` into a prefix (the
//! unclipped samples, `r <= β`) and a suffix (the clipped ones), so B betas over N samples cost
//! O(N log N + B log N). Prefix sums run upwards from the smallest ratio and suffix sums downwards
//! from the largest, each kept with Neumaier compensation in a binary scale that follows the
//! magnitude of its terms (`sums::Scale`): a sum of ratios spanning hundreds of orders of magnitude
//! keeps its relative precision at every split, and no term is ever exponentiated unshifted.

mod accept;
mod build;
mod delta;
mod index;
mod sums;

pub use accept::{accept, imh_chain, ImhRun, Uniforms};
pub use build::{HeldSlice, SortedStore};
pub use delta::{point_with_stderr, PointEstimates};
pub use index::{CurvePoint, QrsIndex};

/// Name of the log-ratio argument in error messages.
pub const LOG_RATIOS: &str = "log_ratios";
/// Name of the log-weight argument in error messages.
pub const LOG_WEIGHTS: &str = "log_weights";

#[cfg(test)]
mod tests;
