//! Bindings for regular-expression features (linear-time search over a batch of texts).

use numpy::{IntoPyArray, PyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::textmatch::TextPattern;

/// A pattern compiled once; `search` answers a batch of texts without the interpreter lock.
#[pyclass(name = "TextPattern", module = "disco._core", frozen)]
pub struct PyTextPattern {
    inner: TextPattern,
}

#[pymethods]
impl PyTextPattern {
    #[new]
    #[pyo3(signature = (pattern, flags=""))]
    fn new(pattern: &str, flags: &str) -> PyResult<Self> {
        let inner = TextPattern::compile(pattern, flags).map_err(PyErr::from)?;
        Ok(PyTextPattern { inner })
    }

    /// Per text, whether the pattern matches somewhere in it.
    fn search<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<bool>>> {
        if texts.is_instance_of::<PyString>() {
            return Err(PyValueError::new_err(
                "texts is one str: a sequence of str is expected",
            ));
        }
        let owned = texts
            .try_iter()
            .map_err(|_| PyValueError::new_err("texts must be a sequence of str"))?
            .enumerate()
            .map(|(i, item)| {
                let item = item?;
                let text = item.cast::<PyString>().map_err(|_| {
                    PyValueError::new_err(format!(
                        "texts[{i}] is {}: str is expected",
                        item.get_type()
                            .name()
                            .map_or_else(|_| "?".to_string(), |n| n.to_string())
                    ))
                })?;
                Ok(text.to_str()?.to_owned())
            })
            .collect::<PyResult<Vec<String>>>()?;
        let out = py.detach(|| self.inner.search(&owned));
        Ok(out.into_pyarray(py))
    }
}
