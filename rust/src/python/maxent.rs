//! Bindings for the maximum-entropy coefficient solver (docs/design.md §3).

use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use pyo3::exceptions::PyValueError;

use super::{count, matrix, optional, optional_vector, real, values, vector};
use crate::error::{Error, FEATURES_ARG};
use crate::maxent::{self, Options, Problem};

/// `(coefficients, iterations, moments, max_error, ess, log_z)`.
type FitTuple<'py> = (
    Bound<'py, PyArray1<f64>>,
    usize,
    Bound<'py, PyArray1<f64>>,
    f64,
    f64,
    f64,
);

/// Fits the coefficients `lambda` of `P = a b exp(lambda . phi)` so that its moments meet the
/// targets on importance-weighted samples; see `disco.numerics.fit_coefficients`.
// `tolerance` and `max_iterations` are read from any Python object so that a bad value is a
// ValueError (not an OverflowError or TypeError); the text signature shows their defaults
// (`maxent::DEFAULT_*`), which `mypy.stubtest` compares with the stub.
#[pyfunction]
#[pyo3(
    signature = (
        features,
        target_moments,
        log_weights=None,
        groups=None,
        tolerance=None,
        max_iterations=None,
        initial=None,
        feature_names=None,
    ),
    text_signature = "(features, target_moments, log_weights=None, groups=None, \
                      tolerance=1e-08, max_iterations=100, initial=None, feature_names=None)"
)]
#[allow(clippy::too_many_arguments)] // the keyword arguments of the Python function
pub fn fit_coefficients<'py>(
    py: Python<'py>,
    features: &Bound<'py, PyAny>,
    target_moments: &Bound<'py, PyAny>,
    log_weights: Option<&Bound<'py, PyAny>>,
    groups: Option<&Bound<'py, PyAny>>,
    tolerance: Option<&Bound<'py, PyAny>>,
    max_iterations: Option<&Bound<'py, PyAny>>,
    initial: Option<&Bound<'py, PyAny>>,
    feature_names: Option<Vec<Bound<'py, PyAny>>>,
) -> PyResult<FitTuple<'py>> {
    // Each feature's label in messages: the repr of its name, as Python shows it.
    let labels = feature_names
        .unwrap_or_default()
        .iter()
        .map(|name| Ok(name.repr()?.to_string()))
        .collect::<PyResult<Vec<String>>>()?;
    let (f, rows, cols) = matrix(maxent::FEATURES, features)?;
    let targets = vector(maxent::TARGETS, target_moments)?;
    let lw = optional_vector(maxent::LOG_WEIGHTS, log_weights)?;
    let g = optional(groups, |o| values::<i64>(maxent::GROUPS, o, 1))?;
    let init = optional_vector(maxent::INITIAL, initial)?;
    let tolerance = tolerance.map_or(Ok(maxent::DEFAULT_TOLERANCE), |t| real("tolerance", t))?;
    let max_iterations = max_iterations.map_or(Ok(maxent::DEFAULT_MAX_ITERATIONS), |m| {
        count("max_iterations", m)
    })?;
    let problem = Problem {
        features: f.as_slice(),
        rows,
        cols,
        targets: targets.as_slice(),
        log_weights: lw.as_ref().map(super::Values::as_slice),
        groups: g.as_ref().map(super::Values::as_slice),
    };
    let options = Options {
        tolerance,
        max_iterations,
        initial: init.as_ref().map(super::Values::as_slice),
    };
    let fit = py
        .detach(|| maxent::fit(&problem, &options))
        .map_err(|err| match err {
            // A feature (or its target) is shown with its name: the error keeps the index.
            Error::InvalidInput(message) => PyValueError::new_err(message.render(&|arg, k| {
                let named = arg == FEATURES_ARG || arg == maxent::TARGETS;
                named.then(|| labels.get(k).cloned()).flatten()
            })),
            other @ Error::NoConvergence { .. } => PyErr::from(other),
        })?;
    Ok((
        fit.coefficients.into_pyarray(py),
        fit.iterations,
        fit.moments.into_pyarray(py),
        fit.max_error,
        fit.ess,
        fit.log_z,
    ))
}
