//! Bindings for divergence estimates, `log Z`, f-DPG pseudo-rewards and the tuner's metrics.

use numpy::{IntoPyArray, PyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::{matrix, optional_vector, real, vector, Values, Wrap};
use crate::divergence::{self as div, Divergence, GroupedSamples, LogScores, MetricsInput};

/// Two per-sample arrays returned together.
type ArrayPair<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);
/// The tuner's named scalars and, when features were given, the moments.
type MetricsPair<'py> = (Bound<'py, PyDict>, Option<Bound<'py, PyArray1<f64>>>);

/// The three 1-D log-score arrays `(target, model, proposal)`, borrowed in C order.
struct Borrowed<'py> {
    arrays: [Values<'py, f64>; 3],
    model_name: &'static str,
}

impl<'py> Borrowed<'py> {
    /// Borrows the arrays; `model` goes by `model_name` in messages.
    fn new(
        target: &Bound<'py, PyAny>,
        model: &Bound<'py, PyAny>,
        model_name: &'static str,
        proposal: &Bound<'py, PyAny>,
    ) -> PyResult<Self> {
        let arrays = [
            vector(div::TARGET, target)?,
            vector(model_name, model)?,
            vector(div::PROPOSAL, proposal)?,
        ];
        Ok(Self { arrays, model_name })
    }

    /// The kernels' view of them.
    fn scores(&self) -> LogScores<'_> {
        let [t, m, q] = &self.arrays;
        LogScores::new(t.as_slice(), m.as_slice(), q.as_slice())
            .with_model(m.as_slice(), self.model_name)
    }
}

/// An optional float argument (`None` is absent).
fn optional_real(name: &str, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
    obj.filter(|o| !o.is_none())
        .map(|o| real(name, o))
        .transpose()
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
    Ok(py.detach(|| div::estimate_log_z(t, q))?)
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
    let b = Borrowed::new(
        target_log_scores,
        model_log_probs,
        div::MODEL,
        proposal_log_probs,
    )?;
    let log_z = optional_real("log_z", log_z)?;
    let s = b.scores();
    Ok(py.detach(|| div::estimate(kind.0, &s, log_z))?)
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
    let z = z.as_ref().map(Values::as_slice);
    let out = py.detach(|| div::estimate_grouped(kind.0, &g, z))?;
    Ok(out.into_pyarray(py))
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
    let b = Borrowed::new(
        target_log_scores,
        policy_log_probs,
        div::POLICY,
        proposal_log_probs,
    )?;
    let (log_z, max_log_t) = (real("log_z", log_z)?, real("max_log_t", max_log_t)?);
    let s = b.scores();
    let (mut w, mut wr) = (vec![0.0; s.model.len()], vec![0.0; s.model.len()]);
    py.detach(|| div::pseudo_rewards(kind.0, &s, log_z, max_log_t, &mut w, &mut wr))?;
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
    let b = Borrowed::new(
        target_log_scores,
        policy_log_probs,
        div::POLICY,
        proposal_log_probs,
    )?;
    let log_z = real("log_z", log_z)?;
    let s = b.scores();
    Ok(py.detach(|| div::estimate_with_stderr(kind.0, &s, log_z))?)
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
    let b = Borrowed::new(
        target_log_scores,
        policy_log_probs,
        div::POLICY,
        proposal_log_probs,
    )?;
    let log_z = real("log_z", log_z)?;
    let phi = features
        .filter(|o| !o.is_none())
        .map(|o| matrix(div::FEATURES, o))
        .transpose()?;
    let base = optional_vector(div::BASE, base_log_probs)?;
    let input = MetricsInput {
        scores: b.scores(),
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
