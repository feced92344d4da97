//! Bindings for the estimates with their standard errors: each returns `(value, stderr)`
//! (arrays of them for moments).

use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use super::scores::scores_binding;
use super::{features_for, on_vector, optional, real, vector, weights_and_features};
use crate::divergence as div;
use crate::stderr as kernels;

/// Moments and their standard errors, as two arrays.
type ArrayPair<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);

scores_binding! {
    /// `(value, stderr)` of one divergence (`kl`, `reverse_kl`, `tv`, `js`).
    fn divergence_stderr(kind, target_log_scores, model_log_probs, proposal_log_probs, log_z=None)
        -> (f64, f64);
    Scores |py, kind, s, log_z| {
        let e = py.detach(|| div::estimate_and_stderr(kind, &s, log_z))?;
        Ok((e.value, e.stderr))
    }
}

/// `(moments, stderrs)` of the self-normalised moments of an `n x k` feature matrix.
#[pyfunction]
pub fn weighted_moments_stderr<'py>(
    py: Python<'py>,
    log_weights: &Bound<'py, PyAny>,
    features: &Bound<'py, PyAny>,
) -> PyResult<ArrayPair<'py>> {
    let (lw, f, k) = weights_and_features(log_weights, features)?;
    let (lw, f) = (lw.as_slice(), f.as_slice());
    let (values, stderrs) =
        py.detach(|| kernels::weighted_moments("log_weights", lw, "features", f, k))?;
    Ok((values.into_pyarray(py), stderrs.into_pyarray(py)))
}

/// `(value, stderr)` of the effective sample size of the weights `e^l`.
#[pyfunction]
pub fn effective_sample_size_stderr(
    py: Python<'_>,
    log_weights: &Bound<'_, PyAny>,
) -> PyResult<(f64, f64)> {
    let e = on_vector(py, "log_weights", log_weights, |lw| {
        kernels::effective_sample_size("log_weights", lw)
    })?;
    Ok((e.value, e.stderr))
}

/// QRS at one `log β` from unweighted samples of `q`: `(acceptance_rate, kl, tv)` as
/// `(value, stderr)` pairs, and `(moments, stderrs)` arrays when features were given.
#[pyfunction]
#[pyo3(signature = (log_ratios, log_beta, features=None))]
#[allow(clippy::type_complexity)] // the Python tuple, spelt out once
pub fn qrs_point_stderr<'py>(
    py: Python<'py>,
    log_ratios: &Bound<'py, PyAny>,
    log_beta: &Bound<'py, PyAny>,
    features: Option<&Bound<'py, PyAny>>,
) -> PyResult<((f64, f64), (f64, f64), (f64, f64), Option<ArrayPair<'py>>)> {
    let l = vector(crate::qrs::LOG_RATIOS, log_ratios)?;
    let b = real("log_beta", log_beta)?;
    let l = l.as_slice();
    let phi = optional(features, |o| {
        features_for(crate::qrs::LOG_RATIOS, l.len(), o)
    })?;
    let f = phi.as_ref().map(|(f, k)| (f.as_slice(), *k));
    let p = py.detach(|| crate::qrs::point_with_stderr(l, b, f))?;
    let pair = |e: kernels::Estimate| (e.value, e.stderr);
    let moments = phi.map(|_| {
        let values: Vec<f64> = p.moments.iter().map(|e| e.value).collect();
        let stderrs: Vec<f64> = p.moments.iter().map(|e| e.stderr).collect();
        (values.into_pyarray(py), stderrs.into_pyarray(py))
    });
    Ok((pair(p.acceptance_rate), pair(p.kl), pair(p.tv), moments))
}
