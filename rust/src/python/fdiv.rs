//! Bindings for f-DPG pseudo-rewards and f-divergence estimates.

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use super::{slice1, to_pyerr};
use crate::fdiv::{self, Batch, FDivergence};

/// Two per-sample arrays returned together.
type ArrayPair<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);

/// `(pi/q, (pi/q) * -f'(t))` per sample for the f-DPG loss.
#[pyfunction]
pub fn f_pseudo_rewards<'py>(
    py: Python<'py>,
    kind: &str,
    policy_log_probs: PyReadonlyArray1<'py, f64>,
    target_log_scores: PyReadonlyArray1<'py, f64>,
    proposal_log_probs: PyReadonlyArray1<'py, f64>,
    log_z: f64,
    max_log_t: f64,
) -> PyResult<ArrayPair<'py>> {
    let kind = FDivergence::from_name(kind).map_err(|e| to_pyerr(py, e))?;
    let batch = Batch {
        policy: slice1("policy_log_probs", &policy_log_probs)?,
        target: slice1("target_log_scores", &target_log_scores)?,
        proposal: slice1("proposal_log_probs", &proposal_log_probs)?,
    };
    let n = batch.policy.len();
    let (mut w, mut wr) = (vec![0.0; n], vec![0.0; n]);
    py.detach(|| fdiv::pseudo_rewards(kind, &batch, log_z, max_log_t, &mut w, &mut wr))
        .map_err(|e| to_pyerr(py, e))?;
    Ok((w.into_pyarray(py), wr.into_pyarray(py)))
}

/// `(estimate, standard error)` of `D_f(pi ‖ p)` from samples of `q`.
#[pyfunction]
pub fn f_divergence(
    py: Python<'_>,
    kind: &str,
    policy_log_probs: PyReadonlyArray1<'_, f64>,
    target_log_scores: PyReadonlyArray1<'_, f64>,
    proposal_log_probs: PyReadonlyArray1<'_, f64>,
    log_z: f64,
) -> PyResult<(f64, f64)> {
    let kind = FDivergence::from_name(kind).map_err(|e| to_pyerr(py, e))?;
    let batch = Batch {
        policy: slice1("policy_log_probs", &policy_log_probs)?,
        target: slice1("target_log_scores", &target_log_scores)?,
        proposal: slice1("proposal_log_probs", &proposal_log_probs)?,
    };
    py.detach(|| fdiv::estimate(kind, &batch, log_z))
        .map_err(|e| to_pyerr(py, e))
}
