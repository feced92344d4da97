//! Bindings for the estimates with their standard errors: each returns `(value, stderr)`
//! (arrays of them for moments).

use numpy::{IntoPyArray, PyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::{matrix, real, vector, weights_and_features, Wrap};
use crate::divergence::{self as div, Divergence, LogScores};
use crate::stderr as kernels;

/// Moments and their standard errors, as two arrays.
type ArrayPair<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);

/// `(value, stderr)` of one divergence (`kl`, `reverse_kl`, `tv`, `js`).
#[pyfunction]
#[pyo3(signature = (kind, target_log_scores, model_log_probs, proposal_log_probs, log_z=None))]
pub fn divergence_stderr(
    py: Python<'_>,
    kind: Wrap<Divergence>,
    target_log_scores: &Bound<'_, PyAny>,
    model_log_probs: &Bound<'_, PyAny>,
    proposal_log_probs: &Bound<'_, PyAny>,
    log_z: Option<&Bound<'_, PyAny>>,
) -> PyResult<(f64, f64)> {
    let t = vector(div::TARGET, target_log_scores)?;
    let m = vector(div::MODEL, model_log_probs)?;
    let q = vector(div::PROPOSAL, proposal_log_probs)?;
    let log_z = log_z
        .filter(|o| !o.is_none())
        .map(|o| real("log_z", o))
        .transpose()?;
    let s = LogScores::new(t.as_slice(), m.as_slice(), q.as_slice());
    let e = py.detach(|| div::estimate_and_stderr(kind.0, &s, log_z))?;
    Ok((e.value, e.stderr))
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
    let lw = vector("log_weights", log_weights)?;
    let lw = lw.as_slice();
    let e = py.detach(|| kernels::effective_sample_size("log_weights", lw))?;
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
    let phi = features
        .filter(|o| !o.is_none())
        .map(|o| matrix("features", o))
        .transpose()?;
    if let Some((_, rows, _)) = &phi {
        if *rows != l.as_slice().len() {
            return Err(PyValueError::new_err(format!(
                "length mismatch: log_ratios has {} values but features has {rows} rows",
                l.as_slice().len()
            )));
        }
    }
    let l = l.as_slice();
    let f = phi.as_ref().map(|(f, _, k)| (f.as_slice(), *k));
    let p = py.detach(|| crate::qrs::point_with_stderr(l, b, f))?;
    let pair = |e: kernels::Estimate| (e.value, e.stderr);
    let moments = phi.map(|_| {
        let values: Vec<f64> = p.moments.iter().map(|e| e.value).collect();
        let stderrs: Vec<f64> = p.moments.iter().map(|e| e.stderr).collect();
        (values.into_pyarray(py), stderrs.into_pyarray(py))
    });
    Ok((pair(p.acceptance_rate), pair(p.kl), pair(p.tv), moments))
}
