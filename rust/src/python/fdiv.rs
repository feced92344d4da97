//! Bindings for f-DPG pseudo-rewards and f-divergence estimates.

use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use super::{real, vector, Values, Wrap};
use crate::divergence::Divergence;
use crate::fdiv::{self, Batch};

/// Two per-sample arrays returned together.
type ArrayPair<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);

/// The three per-sample arrays of a batch, borrowed in C order.
fn arrays<'py>(
    policy_log_probs: &Bound<'py, PyAny>,
    target_log_scores: &Bound<'py, PyAny>,
    proposal_log_probs: &Bound<'py, PyAny>,
) -> PyResult<[Values<'py, f64>; 3]> {
    Ok([
        vector("policy_log_probs", policy_log_probs)?,
        vector("target_log_scores", target_log_scores)?,
        vector("proposal_log_probs", proposal_log_probs)?,
    ])
}

/// `(pi/q, (pi/q) * -f'(t))` per sample for the f-DPG loss.
#[pyfunction]
pub fn f_pseudo_rewards<'py>(
    py: Python<'py>,
    kind: Wrap<Divergence>,
    policy_log_probs: &Bound<'py, PyAny>,
    target_log_scores: &Bound<'py, PyAny>,
    proposal_log_probs: &Bound<'py, PyAny>,
    log_z: &Bound<'py, PyAny>,
    max_log_t: &Bound<'py, PyAny>,
) -> PyResult<ArrayPair<'py>> {
    let Wrap(kind) = kind;
    let [p, t, q] = arrays(policy_log_probs, target_log_scores, proposal_log_probs)?;
    let (log_z, max_log_t) = (real("log_z", log_z)?, real("max_log_t", max_log_t)?);
    let batch = Batch {
        policy: p.as_slice(),
        target: t.as_slice(),
        proposal: q.as_slice(),
    };
    let n = batch.policy.len();
    let (mut w, mut wr) = (vec![0.0; n], vec![0.0; n]);
    py.detach(|| fdiv::pseudo_rewards(kind, &batch, log_z, max_log_t, &mut w, &mut wr))
        .map_err(PyErr::from)?;
    Ok((w.into_pyarray(py), wr.into_pyarray(py)))
}

/// `(estimate, standard error)` of `D_f(pi ‖ p)` from samples of `q`.
#[pyfunction]
pub fn f_divergence(
    py: Python<'_>,
    kind: Wrap<Divergence>,
    policy_log_probs: &Bound<'_, PyAny>,
    target_log_scores: &Bound<'_, PyAny>,
    proposal_log_probs: &Bound<'_, PyAny>,
    log_z: &Bound<'_, PyAny>,
) -> PyResult<(f64, f64)> {
    let Wrap(kind) = kind;
    let [p, t, q] = arrays(policy_log_probs, target_log_scores, proposal_log_probs)?;
    let log_z = real("log_z", log_z)?;
    let batch = Batch {
        policy: p.as_slice(),
        target: t.as_slice(),
        proposal: q.as_slice(),
    };
    py.detach(|| fdiv::estimate(kind, &batch, log_z))
        .map_err(PyErr::from)
}
