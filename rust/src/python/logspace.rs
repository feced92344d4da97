//! Bindings for log-space reductions and divergence estimates.

use numpy::{IntoPyArray, PyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::{matrix, optional_vector, real, vector, Wrap};
use crate::divergence::{self as div, Divergence, GroupedSamples, Samples};
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
    let lw = vector("log_weights", log_weights)?;
    let (f, rows, k) = matrix("features", features)?;
    if rows != lw.as_slice().len() {
        return Err(PyValueError::new_err(format!(
            "length mismatch: log_weights has {} values but features has {rows} rows",
            lw.as_slice().len()
        )));
    }
    let (lw, f) = (lw.as_slice(), f.as_slice());
    let out = py
        .detach(|| kernels::weighted_moments("log_weights", lw, "features", f, k))
        .map_err(PyErr::from)?;
    Ok(out.into_pyarray(py))
}

/// `logmeanexp(target - proposal)`: the log of the importance-sampling estimate of Z.
#[pyfunction]
pub fn estimate_log_z(
    py: Python<'_>,
    target_log_scores: &Bound<'_, PyAny>,
    proposal_log_probs: &Bound<'_, PyAny>,
) -> PyResult<f64> {
    let t = vector(div::TARGET, target_log_scores)?;
    let q = vector(div::PROPOSAL, proposal_log_probs)?;
    let (t, q) = (t.as_slice(), q.as_slice());
    py.detach(|| div::estimate_log_z(t, q)).map_err(PyErr::from)
}

/// One divergence estimate (`kind` in kl, reverse_kl, tv, js) from one group of samples.
#[pyfunction]
#[pyo3(signature = (kind, target_log_scores, model_log_probs, proposal_log_probs, log_z=None))]
pub fn divergence(
    py: Python<'_>,
    kind: Wrap<Divergence>,
    target_log_scores: &Bound<'_, PyAny>,
    model_log_probs: &Bound<'_, PyAny>,
    proposal_log_probs: &Bound<'_, PyAny>,
    log_z: Option<&Bound<'_, PyAny>>,
) -> PyResult<f64> {
    let Wrap(kind) = kind;
    let t = vector(div::TARGET, target_log_scores)?;
    let m = vector(div::MODEL, model_log_probs)?;
    let q = vector(div::PROPOSAL, proposal_log_probs)?;
    let log_z = log_z
        .filter(|z| !z.is_none())
        .map(|z| real("log_z", z))
        .transpose()?;
    let s = Samples {
        target: t.as_slice(),
        model: m.as_slice(),
        proposal: q.as_slice(),
    };
    py.detach(|| div::estimate(kind, &s, log_z))
        .map_err(PyErr::from)
}

/// One divergence estimate per context for `c x n` matrices of log-scores.
#[pyfunction]
#[pyo3(signature = (kind, target_log_scores, model_log_probs, proposal_log_probs, log_z=None))]
pub fn divergence_grouped<'py>(
    py: Python<'py>,
    kind: Wrap<Divergence>,
    target_log_scores: &Bound<'py, PyAny>,
    model_log_probs: &Bound<'py, PyAny>,
    proposal_log_probs: &Bound<'py, PyAny>,
    log_z: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let Wrap(kind) = kind;
    let (t, rows, n) = matrix(div::TARGET, target_log_scores)?;
    let (m, ..) = matrix(div::MODEL, model_log_probs)?;
    let (q, ..) = matrix(div::PROPOSAL, proposal_log_probs)?;
    for (name, other) in [(div::MODEL, &m), (div::PROPOSAL, &q)] {
        if other.shape() != t.shape() {
            return Err(PyValueError::new_err(format!(
                "shape mismatch: {} has shape ({rows}, {n}) but {name} has shape ({}, {})",
                div::TARGET,
                other.shape()[0],
                other.shape()[1]
            )));
        }
    }
    let z = optional_vector("log_z", log_z)?;
    let g = GroupedSamples {
        target: t.as_slice(),
        model: m.as_slice(),
        proposal: q.as_slice(),
        n,
    };
    let z = z.as_ref().map(super::Values::as_slice);
    let out = py
        .detach(|| div::estimate_grouped(kind, &g, z))
        .map_err(PyErr::from)?;
    Ok(out.into_pyarray(py))
}
