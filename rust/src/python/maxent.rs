//! Bindings for the maximum-entropy coefficient solver (DESIGN §4).

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::{slice1, slice2, to_pyerr};
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
// The defaults are written out (they equal `maxent::DEFAULT_*`) so that the text signature,
// which `mypy.stubtest` compares with the stub, shows them.
#[pyfunction]
#[pyo3(signature = (
    features,
    target_moments,
    log_weights=None,
    groups=None,
    tolerance=1e-8,
    max_iterations=100,
    initial=None,
))]
pub fn fit_coefficients<'py>(
    py: Python<'py>,
    features: PyReadonlyArray2<'py, f64>,
    target_moments: PyReadonlyArray1<'py, f64>,
    log_weights: Option<PyReadonlyArray1<'py, f64>>,
    groups: Option<PyReadonlyArray1<'py, i64>>,
    tolerance: f64,
    max_iterations: usize,
    initial: Option<PyReadonlyArray1<'py, f64>>,
) -> PyResult<FitTuple<'py>> {
    let (f, rows, cols) = slice2(maxent::FEATURES, &features)?;
    let targets = slice1(maxent::TARGETS, &target_moments)?;
    let lw = log_weights
        .as_ref()
        .map(|a| slice1(maxent::LOG_WEIGHTS, a))
        .transpose()?;
    let g = groups
        .as_ref()
        .map(|a| {
            a.as_slice().map_err(|_| {
                PyValueError::new_err(format!(
                    "{} must be a contiguous int64 array",
                    maxent::GROUPS
                ))
            })
        })
        .transpose()?;
    let init = initial
        .as_ref()
        .map(|a| slice1(maxent::INITIAL, a))
        .transpose()?;
    let problem = Problem {
        features: f,
        rows,
        cols,
        targets,
        log_weights: lw,
        groups: g,
    };
    let options = Options {
        tolerance,
        max_iterations,
        initial: init,
    };
    let fit = py
        .detach(|| maxent::fit(&problem, &options))
        .map_err(|e| to_pyerr(py, e))?;
    Ok((
        fit.coefficients.into_pyarray(py),
        fit.iterations,
        fit.moments.into_pyarray(py),
        fit.max_error,
        fit.ess,
        fit.log_z,
    ))
}
