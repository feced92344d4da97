//! The `disco._core` extension module: conversions and error mapping only.

use numpy::{
    Element, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBool;

use crate::Error;

mod divergence;
mod logspace;
mod maxent;
mod qrs;
mod scores;
mod stderr;
mod textmatch;

pyo3::create_exception!(
    disco._core,
    ConvergenceError,
    PyRuntimeError,
    "An iterative solver stopped before meeting its tolerance; `.last`, `.iterations` and `.max_error` hold its final state."
);

/// The one road from a kernel error to the Python exception users see: `InvalidInput` is a
/// `ValueError`, `NoConvergence` a `disco.ConvergenceError` carrying the solver's last state.
impl From<Error> for PyErr {
    fn from(error: Error) -> PyErr {
        match error {
            Error::InvalidInput(message) => PyValueError::new_err(message.to_string()),
            Error::NoConvergence {
                message,
                last,
                iterations,
                max_error,
            } => Python::attach(|py| {
                let err = ConvergenceError::new_err(message);
                let value = err.value(py);
                // Attaching attributes to a fresh exception object cannot fail in practice; if
                // it did, the message alone still reaches the user.
                let _ = value.setattr("last", last);
                let _ = value.setattr("iterations", iterations);
                let _ = value.setattr("max_error", max_error);
                err
            }),
        }
    }
}

/// A kernel type read from a Python argument, as polars' `Wrap<T>`: a `str` parsed once with
/// the type's `FromStr`, so a bad name is a `ValueError` before any work.
pub(crate) struct Wrap<T>(pub T);

impl<'a, 'py> FromPyObject<'a, 'py> for Wrap<crate::divergence::Divergence> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let name: String = obj.extract().map_err(|_| {
            PyValueError::new_err("kind must be a str naming a divergence, such as 'kl'")
        })?;
        Ok(Wrap(name.parse()?))
    }
}

/// A numpy array borrowed for reading, with its values in C (row-major) order: borrowed as is
/// when the array is C-contiguous, copied once otherwise (Fortran order, strided or
/// negative-stride views), so that a kernel never reads a layout it does not expect.
pub(crate) struct Values<'py, T: Element> {
    array: PyReadonlyArrayDyn<'py, T>,
    copy: Option<Vec<T>>,
}

impl<T: Element + Copy> Values<'_, T> {
    /// The values in C order.
    pub(crate) fn as_slice(&self) -> &[T] {
        match &self.copy {
            Some(copy) => copy,
            // Invariant: `copy` is `None` only for C-contiguous arrays, which `as_slice` accepts.
            None => self
                .array
                .as_slice()
                .expect("a C-contiguous array is a slice"),
        }
    }

    /// The array's shape.
    pub(crate) fn shape(&self) -> &[usize] {
        self.array.shape()
    }
}

/// The dtype names the bindings accept, for messages.
pub(crate) trait Named: Element + Copy {
    const NAME: &'static str;
}
impl Named for f64 {
    const NAME: &'static str = "float64";
}
impl Named for i64 {
    const NAME: &'static str = "int64";
}

fn shape_text(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Borrows `obj` as an `ndim`-dimensional numpy array of `T`, refusing anything else (another
/// dtype, byte order or number of dimensions, a non-array) with a `ValueError` naming `name`.
pub(crate) fn values<'py, T: Named>(
    name: &str,
    obj: &Bound<'py, PyAny>,
    ndim: usize,
) -> PyResult<Values<'py, T>> {
    let Ok(untyped) = obj.cast::<PyUntypedArray>() else {
        return Err(PyValueError::new_err(format!(
            "{name} must be a {ndim}-D numpy array of {}; got {}",
            T::NAME,
            obj.get_type().name()?
        )));
    };
    let Ok(array) = untyped.cast::<PyArrayDyn<T>>() else {
        return Err(PyValueError::new_err(format!(
            "{name} has dtype {}: a {ndim}-D numpy array of native {} is expected \
             (disco.numerics converts other inputs)",
            untyped.dtype().str()?,
            T::NAME
        )));
    };
    if array.ndim() != ndim {
        return Err(PyValueError::new_err(format!(
            "{name} must be {ndim}-D; got shape {}",
            shape_text(array.shape())
        )));
    }
    let array = array
        .try_readonly()
        .map_err(|e| PyValueError::new_err(format!("{name} cannot be read: {e}")))?;
    let copy = (!array.is_c_contiguous()).then(|| array.as_array().iter().copied().collect());
    Ok(Values { array, copy })
}

/// A 1-D float64 argument.
pub(crate) fn vector<'py>(name: &str, obj: &Bound<'py, PyAny>) -> PyResult<Values<'py, f64>> {
    values(name, obj, 1)
}

/// A 2-D float64 argument and its `(rows, cols)`.
pub(crate) fn matrix<'py>(
    name: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<(Values<'py, f64>, usize, usize)> {
    let m = values(name, obj, 2)?;
    let (rows, cols) = (m.shape()[0], m.shape()[1]);
    Ok((m, rows, cols))
}

/// `features` (2-D) with one row per value of the 1-D argument `name` (`n` values), and the
/// number of features.
pub(crate) fn features_for<'py>(
    name: &str,
    n: usize,
    features: &Bound<'py, PyAny>,
) -> PyResult<(Values<'py, f64>, usize)> {
    let (f, rows, k) = matrix("features", features)?;
    if rows != n {
        return Err(PyValueError::new_err(format!(
            "length mismatch: {name} has {n} values but features has {rows} rows"
        )));
    }
    Ok((f, k))
}

/// `log_weights` (1-D) and `features` (2-D, one row per weight) and the number of features.
pub(crate) fn weights_and_features<'py>(
    log_weights: &Bound<'py, PyAny>,
    features: &Bound<'py, PyAny>,
) -> PyResult<(Values<'py, f64>, Values<'py, f64>, usize)> {
    let lw = vector("log_weights", log_weights)?;
    let (f, k) = features_for("log_weights", lw.as_slice().len(), features)?;
    Ok((lw, f, k))
}

/// An optional argument (`None` is absent), read by `read` when present.
pub(crate) fn optional<'py, T>(
    obj: Option<&Bound<'py, PyAny>>,
    read: impl FnOnce(&Bound<'py, PyAny>) -> PyResult<T>,
) -> PyResult<Option<T>> {
    obj.filter(|o| !o.is_none()).map(read).transpose()
}

/// An optional 1-D float64 argument.
pub(crate) fn optional_vector<'py>(
    name: &str,
    obj: Option<&Bound<'py, PyAny>>,
) -> PyResult<Option<Values<'py, f64>>> {
    optional(obj, |o| vector(name, o))
}

/// Borrows the 1-D float64 argument `name`, runs `kernel` on its values without the
/// interpreter lock, and maps its error.
pub(crate) fn on_vector<R: Send>(
    py: Python<'_>,
    name: &str,
    obj: &Bound<'_, PyAny>,
    kernel: impl FnOnce(&[f64]) -> crate::Result<R> + Send,
) -> PyResult<R> {
    let x = vector(name, obj)?;
    let x = x.as_slice();
    Ok(py.detach(|| kernel(x))?)
}

/// A count argument: a non-negative Python integer that fits a `usize` (not a bool), else a
/// `ValueError` (never an `OverflowError` or `TypeError`).
pub(crate) fn count(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    let refuse = || {
        let shown = obj
            .repr()
            .map_or_else(|_| "?".to_string(), |r| r.to_string());
        PyValueError::new_err(format!(
            "{name} is {shown}: a non-negative integer below 2^63 is expected"
        ))
    };
    if obj.is_instance_of::<PyBool>() {
        return Err(refuse());
    }
    let value: i64 = obj.extract().map_err(|_| refuse())?;
    usize::try_from(value).map_err(|_| refuse())
}

/// A float argument: a Python real number (not a bool), else a `ValueError`.
pub(crate) fn real(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<f64> {
    let refuse = || {
        let shown = obj
            .repr()
            .map_or_else(|_| "?".to_string(), |r| r.to_string());
        PyValueError::new_err(format!("{name} is {shown}: a real number is expected"))
    };
    let array_of_values = obj.cast::<PyUntypedArray>().is_ok_and(|a| a.ndim() != 0);
    if obj.is_instance_of::<PyBool>() || array_of_values {
        return Err(refuse());
    }
    obj.extract::<f64>().map_err(|_| refuse())
}

#[pymodule(name = "_core")]
mod core_module {
    use pyo3::prelude::*;

    #[pymodule_export]
    use super::divergence::{
        divergence, divergence_grouped, estimate_log_z, f_divergence, f_pseudo_rewards,
        tuner_metrics,
    };
    #[pymodule_export]
    use super::logspace::{
        effective_sample_size, logmeanexp, logsumexp, normalized_weights, weighted_moments,
    };
    #[pymodule_export]
    use super::maxent::fit_coefficients;
    #[pymodule_export]
    use super::qrs::{imh_chain, qrs_accept, PyQrsIndex};
    #[pymodule_export]
    use super::stderr::{
        divergence_stderr, effective_sample_size_stderr, qrs_point_stderr, weighted_moments_stderr,
    };
    #[pymodule_export]
    use super::textmatch::PyTextPattern;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add(
            "ConvergenceError",
            m.py().get_type::<super::ConvergenceError>(),
        )?;
        Ok(())
    }
}
