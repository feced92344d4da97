//! Bindings for log-space reductions.

use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use super::{vector, weights_and_features};
use crate::logspace as kernels;

/// `log Σ exp(x)`.
#[pyfunction]
pub fn logsumexp(py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<f64> {
    let x = vector("x", x)?;
    let x = x.as_slice();
    py.detach(|| kernels::logsumexp("x", x))
        .map_err(PyErr::from)
}

/// `log mean exp(x)`.
#[pyfunction]
pub fn logmeanexp(py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<f64> {
    let x = vector("x", x)?;
    let x = x.as_slice();
    py.detach(|| kernels::logmeanexp("x", x))
        .map_err(PyErr::from)
}

/// Normalised weights `exp(l - logsumexp(l))`.
#[pyfunction]
pub fn normalized_weights<'py>(
    py: Python<'py>,
    log_weights: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let lw = vector("log_weights", log_weights)?;
    let lw = lw.as_slice();
    let mut out = vec![0.0; lw.len()];
    py.detach(|| kernels::normalized_weights_into("log_weights", lw, &mut out))
        .map_err(PyErr::from)?;
    Ok(out.into_pyarray(py))
}

/// Effective sample size `1 / Σ w²`.
#[pyfunction]
pub fn effective_sample_size(py: Python<'_>, log_weights: &Bound<'_, PyAny>) -> PyResult<f64> {
    let lw = vector("log_weights", log_weights)?;
    let lw = lw.as_slice();
    py.detach(|| kernels::effective_sample_size("log_weights", lw))
        .map_err(PyErr::from)
}

/// Self-normalised moments of an `n x k` feature matrix.
#[pyfunction]
pub fn weighted_moments<'py>(
    py: Python<'py>,
    log_weights: &Bound<'py, PyAny>,
    features: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let (lw, f, k) = weights_and_features(log_weights, features)?;
    let (lw, f) = (lw.as_slice(), f.as_slice());
    let out = py
        .detach(|| kernels::weighted_moments("log_weights", lw, "features", f, k))
        .map_err(PyErr::from)?;
    Ok(out.into_pyarray(py))
}
