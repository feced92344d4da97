//! Bindings for Quasi-Rejection Sampling: accept/reject, curves over beta, the IMH chain.

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::{matrix, on_vector, optional, optional_vector, real, vector};
use crate::qrs as kernels;

/// The binding's `log_uniforms` flag as the kernel's [`kernels::Uniforms`].
fn uniforms_kind(log_uniforms: bool) -> kernels::Uniforms {
    if log_uniforms {
        kernels::Uniforms::Log
    } else {
        kernels::Uniforms::Plain
    }
}

/// QRS decision mask: accept iff `log u < min(0, l - log_beta)`.
#[pyfunction]
#[pyo3(signature = (log_ratios, uniforms, log_beta, log_uniforms=false))]
pub fn qrs_accept<'py>(
    py: Python<'py>,
    log_ratios: &Bound<'py, PyAny>,
    uniforms: &Bound<'py, PyAny>,
    log_beta: &Bound<'py, PyAny>,
    log_uniforms: bool,
) -> PyResult<Bound<'py, PyArray1<bool>>> {
    let l = vector(kernels::LOG_RATIOS, log_ratios)?;
    let u = vector(uniforms_kind(log_uniforms).arg(), uniforms)?;
    let log_beta = real("log_beta", log_beta)?;
    let (l, u) = (l.as_slice(), u.as_slice());
    let out = py
        .detach(|| kernels::accept(l, u, log_beta, uniforms_kind(log_uniforms)))
        .map_err(PyErr::from)?;
    Ok(out.into_pyarray(py))
}

/// `(states, accepted, final_log_ratio)` of an IMH run.
type ImhOutput<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<bool>>, f64);

/// Runs an independent Metropolis–Hastings chain over a batch of proposals.
///
/// Returns `(states, accepted, final_log_ratio)`: per step the index of the proposal the chain
/// sits on (-1 for its starting state) and whether it moved.
#[pyfunction]
#[pyo3(signature = (log_ratios, uniforms, current_log_ratio, log_uniforms=false))]
pub fn imh_chain<'py>(
    py: Python<'py>,
    log_ratios: &Bound<'py, PyAny>,
    uniforms: &Bound<'py, PyAny>,
    current_log_ratio: &Bound<'py, PyAny>,
    log_uniforms: bool,
) -> PyResult<ImhOutput<'py>> {
    let l = vector(kernels::LOG_RATIOS, log_ratios)?;
    let u = vector(uniforms_kind(log_uniforms).arg(), uniforms)?;
    let current_log_ratio = real("current_log_ratio", current_log_ratio)?;
    let (l, u) = (l.as_slice(), u.as_slice());
    let run = py
        .detach(|| kernels::imh_chain(l, u, uniforms_kind(log_uniforms), current_log_ratio))
        .map_err(PyErr::from)?;
    Ok((
        run.states.into_pyarray(py),
        run.accepted.into_pyarray(py),
        run.final_log_ratio,
    ))
}

/// The index's sorted copy of the log-ratios, in a numpy array that only this object refers to.
fn held_array(array: Bound<'_, PyArray1<f64>>) -> kernels::HeldSlice<Py<PyArray1<f64>>> {
    let (data, len) = (array.data().cast_const(), array.len());
    // SAFETY: the array was made here from a vector of our own, sorted in place, and is never
    // handed to Python code: nothing else refers to it, so its buffer is neither freed (the
    // `HeldSlice` holds a reference) nor written while it lives, and reading it from any thread
    // is sound.
    unsafe { kernels::HeldSlice::new(array.unbind(), data, len) }
}

/// Sorted log-ratios with prefix and suffix sums: any beta in O(log N) after one O(N log N) build.
///
/// Holds the kernel index (one sorted copy of the log-ratios, see `qrs::QrsIndex`) and
/// references to the input arrays (no copy), which feature moments read again; the kernel
/// refuses them if they were changed in between.
#[pyclass(name = "QrsIndex", module = "disco._core", frozen)]
pub struct PyQrsIndex {
    inner: kernels::QrsIndex,
    log_ratios: Py<PyAny>,
    log_weights: Option<Py<PyAny>>,
}

#[pymethods]
impl PyQrsIndex {
    #[new]
    #[pyo3(signature = (log_ratios, log_weights=None))]
    fn new(
        py: Python<'_>,
        log_ratios: &Bound<'_, PyAny>,
        log_weights: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let l = vector(kernels::LOG_RATIOS, log_ratios)?;
        let w = optional_vector(kernels::LOG_WEIGHTS, log_weights)?;
        let (ls, ws) = (l.as_slice(), w.as_ref().map(super::Values::as_slice));
        let inner = if let Some(ws) = ws {
            py.detach(|| kernels::QrsIndex::new(ls, Some(ws)))?
        } else {
            // One copy, moved into a numpy array (no second copy) and sorted in place by
            // numpy's vectorised sort; the kernel keeps reading it there.
            let copy = ls.to_vec().into_pyarray(py);
            copy.call_method0("sort")?;
            let store = held_array(copy);
            py.detach(|| kernels::QrsIndex::from_sorted(ls, Box::new(store)))?
        };
        Ok(PyQrsIndex {
            inner,
            log_ratios: log_ratios.clone().unbind(),
            log_weights: optional(log_weights, |w| Ok(w.clone().unbind()))?,
        })
    }

    /// Number of samples with nonzero weight.
    #[getter]
    fn n(&self) -> usize {
        self.inner.len()
    }

    /// `log Z`, the (weighted) importance-sampling estimate of the target's normaliser.
    #[getter]
    fn log_z(&self) -> f64 {
        self.inner.log_z()
    }

    /// `log Σ ω`, the log of the total weight.
    #[getter]
    fn log_total_weight(&self) -> f64 {
        self.inner.log_w()
    }

    /// Largest log-ratio: at or above it `p_β = p`.
    #[getter]
    fn max_log_ratio(&self) -> f64 {
        self.inner.max_log_ratio()
    }

    /// Smallest finite log-ratio.
    #[getter]
    fn min_log_ratio(&self) -> f64 {
        self.inner.min_log_ratio()
    }

    /// Acceptance rate of any beta at or below the smallest finite ratio.
    #[getter]
    fn max_acceptance_rate(&self) -> f64 {
        self.inner.max_acceptance_rate()
    }

    /// Acceptance rate, `log Z_β`, KL, TV (and JS when `js`) at every `log β`, as a dict of arrays.
    #[pyo3(signature = (log_betas, js=false))]
    fn curve<'py>(
        &self,
        py: Python<'py>,
        log_betas: &Bound<'py, PyAny>,
        js: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let points = on_vector(py, "log_betas", log_betas, |b| self.inner.curve(b, js))?;
        let out = PyDict::new(py);
        let column =
            |f: fn(&kernels::CurvePoint) -> f64| points.iter().map(f).collect::<Vec<f64>>();
        out.set_item(
            "acceptance_rate",
            column(|p| p.acceptance_rate).into_pyarray(py),
        )?;
        out.set_item("log_z_beta", column(|p| p.log_z_beta).into_pyarray(py))?;
        out.set_item("kl", column(|p| p.kl).into_pyarray(py))?;
        out.set_item("tv", column(|p| p.tv).into_pyarray(py))?;
        if js {
            out.set_item("js", column(|p| p.js).into_pyarray(py))?;
        }
        Ok(out)
    }

    /// Moments under `p_β` of an `n x k` feature matrix at every `log β`, as a `B x k` matrix.
    fn feature_moments<'py>(
        &self,
        py: Python<'py>,
        features: &Bound<'py, PyAny>,
        log_betas: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let (f, rows, k) = matrix("features", features)?;
        if rows != self.inner.n_input() {
            return Err(PyValueError::new_err(format!(
                "length mismatch: the index holds {} samples but features has {rows} rows",
                self.inner.n_input()
            )));
        }
        let b = vector("log_betas", log_betas)?;
        let l = vector(kernels::LOG_RATIOS, self.log_ratios.bind(py))?;
        let w = self
            .log_weights
            .as_ref()
            .map(|w| vector(kernels::LOG_WEIGHTS, w.bind(py)))
            .transpose()?;
        let (f, b, l) = (f.as_slice(), b.as_slice(), l.as_slice());
        let w = w.as_ref().map(super::Values::as_slice);
        let out = py
            .detach(|| self.inner.feature_moments(l, w, f, k, b))
            .map_err(PyErr::from)?;
        let matrix = Array2::from_shape_vec((b.len(), k), out)
            .map_err(|e| PyValueError::new_err(format!("internal shape error: {e}")))?;
        Ok(matrix.into_pyarray(py))
    }

    /// The `log β` giving each acceptance rate in `rates`.
    fn log_beta_for_acceptance_rate<'py>(
        &self,
        py: Python<'py>,
        rates: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let out = on_vector(py, "rates", rates, |r| {
            r.iter()
                .enumerate()
                .map(|(i, &rate)| {
                    self.inner.log_beta_for_acceptance_rate(rate).map_err(|e| {
                        crate::error::Error::InvalidInput(format!("rates[{i}]: {e}").into())
                    })
                })
                .collect::<crate::Result<Vec<f64>>>()
        })?;
        Ok(out.into_pyarray(py))
    }

    fn __repr__(&self) -> String {
        format!(
            "QrsIndex(n={}, log_z={}, max_log_ratio={})",
            self.inner.len(),
            self.inner.log_z(),
            self.inner.max_log_ratio()
        )
    }
}
