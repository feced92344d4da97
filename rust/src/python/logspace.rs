//! Bindings for log-space reductions.

use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use super::{on_vector, weights_and_features};
use crate::logspace as kernels;

/// `log Σ exp(x)`.
#[pyfunction]
pub fn logsumexp(py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<f64> {
    on_vector(py, "x", x, |x| kernels::logsumexp("x", x))
}

/// `log mean exp(x)`.
#[pyfunction]
pub fn logmeanexp(py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<f64> {
    on_vector(py, "x", x, |x| kernels::logmeanexp("x", x))
}

/// Normalised weights `exp(l - logsumexp(l))`.
#[pyfunction]
pub fn normalized_weights<'py>(
    py: Python<'py>,
    log_weights: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let out = on_vector(py, "log_weights", log_weights, |lw| {
        let mut out = vec![0.0; lw.len()];
        kernels::normalized_weights_into("log_weights", lw, &mut out).map(|_| out)
    })?;
    Ok(out.into_pyarray(py))
}

/// Effective sample size `1 / Σ w²`.
#[pyfunction]
pub fn effective_sample_size(py: Python<'_>, log_weights: &Bound<'_, PyAny>) -> PyResult<f64> {
    on_vector(py, "log_weights", log_weights, |lw| {
        kernels::effective_sample_size("log_weights", lw)
    })
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
