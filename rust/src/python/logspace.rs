//! Bindings for log-space reductions and divergence estimates.

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::{slice1, slice2, to_pyerr};
use crate::divergence::{self as div, Divergence, GroupedSamples, Samples};
use crate::logspace as kernels;

fn parse_kind(kind: &str) -> PyResult<Divergence> {
    match kind {
        "kl" | "forward_kl" => Ok(Divergence::ForwardKl),
        "reverse_kl" => Ok(Divergence::ReverseKl),
        "tv" => Ok(Divergence::TotalVariation),
        "js" => Ok(Divergence::JensenShannon),
        other => Err(PyValueError::new_err(format!(
            "unknown divergence {other:?}: expected 'kl', 'reverse_kl', 'tv' or 'js'"
        ))),
    }
}

/// `log Σ exp(x)`.
#[pyfunction]
pub fn logsumexp(py: Python<'_>, x: PyReadonlyArray1<'_, f64>) -> PyResult<f64> {
    let x = slice1("x", &x)?;
    py.detach(|| kernels::logsumexp("x", x))
        .map_err(|e| to_pyerr(py, e))
}

/// `log mean exp(x)`.
#[pyfunction]
pub fn logmeanexp(py: Python<'_>, x: PyReadonlyArray1<'_, f64>) -> PyResult<f64> {
    let x = slice1("x", &x)?;
    py.detach(|| kernels::logmeanexp("x", x))
        .map_err(|e| to_pyerr(py, e))
}

/// Normalised weights `exp(l - logsumexp(l))`.
#[pyfunction]
pub fn normalized_weights<'py>(
    py: Python<'py>,
    log_weights: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let lw = slice1("log_weights", &log_weights)?;
    let mut out = vec![0.0; lw.len()];
    py.detach(|| kernels::normalized_weights_into("log_weights", lw, &mut out))
        .map_err(|e| to_pyerr(py, e))?;
    Ok(out.into_pyarray(py))
}

/// Effective sample size `1 / Σ w²`.
#[pyfunction]
pub fn effective_sample_size(
    py: Python<'_>,
    log_weights: PyReadonlyArray1<'_, f64>,
) -> PyResult<f64> {
    let lw = slice1("log_weights", &log_weights)?;
    py.detach(|| kernels::effective_sample_size("log_weights", lw))
        .map_err(|e| to_pyerr(py, e))
}

/// Self-normalised moments of an `n x k` feature matrix.
#[pyfunction]
pub fn weighted_moments<'py>(
    py: Python<'py>,
    log_weights: PyReadonlyArray1<'py, f64>,
    features: PyReadonlyArray2<'py, f64>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let lw = slice1("log_weights", &log_weights)?;
    let (f, _, k) = slice2("features", &features)?;
    let out = py
        .detach(|| kernels::weighted_moments("log_weights", lw, "features", f, k))
        .map_err(|e| to_pyerr(py, e))?;
    Ok(out.into_pyarray(py))
}

/// `logmeanexp(target - proposal)`: the log of the importance-sampling estimate of Z.
#[pyfunction]
pub fn estimate_log_z(
    py: Python<'_>,
    target_log_scores: PyReadonlyArray1<'_, f64>,
    proposal_log_probs: PyReadonlyArray1<'_, f64>,
) -> PyResult<f64> {
    let t = slice1(div::TARGET, &target_log_scores)?;
    let q = slice1(div::PROPOSAL, &proposal_log_probs)?;
    py.detach(|| div::estimate_log_z(t, q))
        .map_err(|e| to_pyerr(py, e))
}

/// One divergence estimate (`kind` in kl, reverse_kl, tv, js) from one group of samples.
#[pyfunction]
#[pyo3(signature = (kind, target_log_scores, model_log_probs, proposal_log_probs, log_z=None))]
pub fn divergence(
    py: Python<'_>,
    kind: &str,
    target_log_scores: PyReadonlyArray1<'_, f64>,
    model_log_probs: PyReadonlyArray1<'_, f64>,
    proposal_log_probs: PyReadonlyArray1<'_, f64>,
    log_z: Option<f64>,
) -> PyResult<f64> {
    let kind = parse_kind(kind)?;
    let s = Samples {
        target: slice1(div::TARGET, &target_log_scores)?,
        model: slice1(div::MODEL, &model_log_probs)?,
        proposal: slice1(div::PROPOSAL, &proposal_log_probs)?,
    };
    py.detach(|| div::estimate(kind, &s, log_z))
        .map_err(|e| to_pyerr(py, e))
}

/// One divergence estimate per context for `c x n` matrices of log-scores.
#[pyfunction]
#[pyo3(signature = (kind, target_log_scores, model_log_probs, proposal_log_probs, log_z=None))]
pub fn divergence_grouped<'py>(
    py: Python<'py>,
    kind: &str,
    target_log_scores: PyReadonlyArray2<'py, f64>,
    model_log_probs: PyReadonlyArray2<'py, f64>,
    proposal_log_probs: PyReadonlyArray2<'py, f64>,
    log_z: Option<PyReadonlyArray1<'py, f64>>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let kind = parse_kind(kind)?;
    let (t, _, n) = slice2(div::TARGET, &target_log_scores)?;
    let (m, _, _) = slice2(div::MODEL, &model_log_probs)?;
    let (q, _, _) = slice2(div::PROPOSAL, &proposal_log_probs)?;
    let z = match &log_z {
        Some(z) => Some(slice1("log_z", z)?),
        None => None,
    };
    let g = GroupedSamples {
        target: t,
        model: m,
        proposal: q,
        n,
    };
    let out = py
        .detach(|| div::estimate_grouped(kind, &g, z))
        .map_err(|e| to_pyerr(py, e))?;
    Ok(out.into_pyarray(py))
}
