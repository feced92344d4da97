//! Bindings for divergence estimates, `log Z`, f-DPG pseudo-rewards and the tuner's metrics.

use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::scores::{scores_binding, Scores};
use super::{matrix, optional, optional_vector, real, vector, Values, Wrap};
use crate::divergence::{self as div, Divergence, MetricsInput};

/// Two per-sample arrays returned together.
type ArrayPair<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);
/// The tuner's named scalars and, when features were given, the moments.
type MetricsPair<'py> = (Bound<'py, PyDict>, Option<Bound<'py, PyArray1<f64>>>);

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
    Ok(py.detach(|| div::estimate_log_z(t, q))?)
}

scores_binding! {
    /// One divergence estimate (`kind` in kl, reverse_kl, tv, js) from one group of samples.
    fn divergence(kind, target_log_scores, model_log_probs, proposal_log_probs, log_z=None)
        -> f64;
    Scores |py, kind, s, log_z| Ok(py.detach(|| div::estimate(kind, &s, log_z))?)
}

scores_binding! {
    /// One divergence estimate per context for `c x n` matrices of log-scores.
    fn divergence_grouped(kind, target_log_scores, model_log_probs, proposal_log_probs,
        log_z=None) -> Bound<'py, PyArray1<f64>>;
    GroupedScores |py, kind, g, log_z| {
        let z = log_z.as_ref().map(Values::as_slice);
        let out = py.detach(|| div::estimate_grouped(kind, &g, z))?;
        Ok(out.into_pyarray(py))
    }
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
    let (b, log_z) = Scores::of_policy(
        policy_log_probs,
        target_log_scores,
        proposal_log_probs,
        log_z,
    )?;
    let max_log_t = real("max_log_t", max_log_t)?;
    let s = b.view();
    let (mut w, mut wr) = (vec![0.0; s.model.len()], vec![0.0; s.model.len()]);
    py.detach(|| div::pseudo_rewards(kind.0, &s, log_z, max_log_t, &mut w, &mut wr))?;
    Ok((w.into_pyarray(py), wr.into_pyarray(py)))
}

scores_binding! {
    /// `(estimate, standard error)` of `D_f(pi ‖ p)` from samples of `q`.
    fn f_divergence(kind, policy_log_probs, target_log_scores, proposal_log_probs, log_z)
        -> (f64, f64);
    Scores |py, kind, s, log_z| Ok(py.detach(|| div::estimate_with_stderr(kind, &s, log_z))?)
}

/// The tuner's metrics of one context: `(scalars, moments or None)`, where `scalars` maps
/// each metric's name to its value; see `disco.numerics.tuner_metrics`.
#[pyfunction]
#[pyo3(signature = (
    loss, target_log_scores, policy_log_probs, proposal_log_probs, log_z,
    features=None, base_log_probs=None,
))]
#[allow(clippy::too_many_arguments)] // one per array the metrics read, as the Python call
pub fn tuner_metrics<'py>(
    py: Python<'py>,
    loss: Wrap<Divergence>,
    target_log_scores: &Bound<'py, PyAny>,
    policy_log_probs: &Bound<'py, PyAny>,
    proposal_log_probs: &Bound<'py, PyAny>,
    log_z: &Bound<'py, PyAny>,
    features: Option<&Bound<'py, PyAny>>,
    base_log_probs: Option<&Bound<'py, PyAny>>,
) -> PyResult<MetricsPair<'py>> {
    let (scores, log_z) = Scores::of_policy(
        policy_log_probs,
        target_log_scores,
        proposal_log_probs,
        log_z,
    )?;
    let phi = optional(features, |o| matrix(div::FEATURES, o))?;
    let base = optional_vector(div::BASE, base_log_probs)?;
    let input = MetricsInput {
        scores: scores.view(),
        log_z,
        loss: loss.0,
        features: phi.as_ref().map(|(f, _, k)| (f.as_slice(), *k)),
        base: base.as_ref().map(Values::as_slice),
    };
    let metrics = py.detach(|| div::tuner_metrics(&input))?;
    let scalars = PyDict::new(py);
    for (name, value) in metrics.scalars {
        scalars.set_item(name, value)?;
    }
    if let Some(kl) = metrics.kl_policy_base {
        scalars.set_item("kl_policy_base", kl)?;
    }
    if let Some(se) = metrics.kl_policy_base_stderr {
        scalars.set_item("kl_policy_base_stderr", se)?;
    }
    for (j, se) in metrics.moment_stderrs.iter().flatten().enumerate() {
        scalars.set_item(format!("moment_stderr_{j}"), se)?;
    }
    Ok((scalars, metrics.moments.map(|m| m.into_pyarray(py))))
}
