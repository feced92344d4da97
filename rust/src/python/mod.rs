//! The `disco._core` extension module: conversions and error mapping only.

use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::Error;

mod fdiv;
mod logspace;
mod maxent;
mod qrs;

pyo3::create_exception!(
    disco._core,
    ConvergenceError,
    PyRuntimeError,
    "An iterative solver stopped before meeting its tolerance; `.last`, `.iterations` and `.max_error` hold its final state."
);

/// Maps a kernel error to the Python exception users see.
pub(crate) fn to_pyerr(py: Python<'_>, error: Error) -> PyErr {
    match error {
        Error::InvalidInput(message) => PyValueError::new_err(message),
        Error::NoConvergence {
            message,
            last,
            iterations,
            max_error,
        } => {
            let err = ConvergenceError::new_err(message);
            let value = err.value(py);
            // Attaching attributes to a fresh exception object cannot fail in practice; if it
            // did, the message alone still reaches the user.
            let _ = value.setattr("last", last);
            let _ = value.setattr("iterations", iterations);
            let _ = value.setattr("max_error", max_error);
            err
        }
    }
}

/// Borrows a 1-D float64 array as a slice (the Python layer makes it contiguous).
pub(crate) fn slice1<'a>(name: &str, a: &'a PyReadonlyArray1<'_, f64>) -> PyResult<&'a [f64]> {
    a.as_slice()
        .map_err(|_| PyValueError::new_err(format!("{name} must be a contiguous float64 array")))
}

/// Borrows a 2-D C-contiguous float64 array as `(slice, rows, cols)`.
pub(crate) fn slice2<'a>(
    name: &str,
    a: &'a PyReadonlyArray2<'_, f64>,
) -> PyResult<(&'a [f64], usize, usize)> {
    let shape = a.shape();
    let (rows, cols) = (shape[0], shape[1]);
    let s = a.as_slice().map_err(|_| {
        PyValueError::new_err(format!("{name} must be a C-contiguous float64 matrix"))
    })?;
    Ok((s, rows, cols))
}

#[pymodule(name = "_core")]
mod core_module {
    use pyo3::prelude::*;

    #[pymodule_export]
    use super::fdiv::{f_divergence, f_pseudo_rewards};
    #[pymodule_export]
    use super::logspace::{
        divergence, divergence_grouped, effective_sample_size, estimate_log_z, logmeanexp,
        logsumexp, normalized_weights, weighted_moments,
    };
    #[pymodule_export]
    use super::maxent::fit_coefficients;
    #[pymodule_export]
    use super::qrs::{imh_chain, qrs_accept, PyQrsIndex};

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
