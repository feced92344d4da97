//! The three log-score arrays that the divergence bindings read (one group of samples, or one
//! row per context), borrowed and checked in one place, and the Python signatures those
//! bindings share.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::{matrix, optional, optional_vector, real, vector, Values};
use crate::divergence::{self as div, GroupedSamples, LogScores};

/// The three 1-D log-score arrays `(target, model, proposal)`, borrowed in C order.
pub(crate) struct Scores<'py> {
    arrays: [Values<'py, f64>; 3],
    model_name: &'static str,
}

impl<'py> Scores<'py> {
    /// Borrows the arrays (in this order, so that the first bad one is named); `model` goes by
    /// `model_name` in messages.
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

    /// The arrays of a divergence estimate and its optional `log_z` (`None` is absent).
    pub(crate) fn of_model(
        target: &Bound<'py, PyAny>,
        model: &Bound<'py, PyAny>,
        proposal: &Bound<'py, PyAny>,
        log_z: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Self, Option<f64>)> {
        let scores = Self::new(target, model, div::MODEL, proposal)?;
        Ok((scores, optional(log_z, |o| real("log_z", o))?))
    }

    /// The arrays of an f-DPG kernel or the tuner's metrics (`model` is the policy), and `log_z`.
    pub(crate) fn of_policy(
        policy: &Bound<'py, PyAny>,
        target: &Bound<'py, PyAny>,
        proposal: &Bound<'py, PyAny>,
        log_z: &Bound<'py, PyAny>,
    ) -> PyResult<(Self, f64)> {
        let scores = Self::new(target, policy, div::POLICY, proposal)?;
        Ok((scores, real("log_z", log_z)?))
    }

    /// The kernels' view of them.
    pub(crate) fn view(&self) -> LogScores<'_> {
        let [t, m, q] = &self.arrays;
        LogScores::new(t.as_slice(), m.as_slice(), q.as_slice())
            .with_model(m.as_slice(), self.model_name)
    }
}

/// The three `c x n` log-score matrices `(target, model, proposal)` of a grouped estimate,
/// borrowed in C order.
pub(crate) struct GroupedScores<'py> {
    arrays: [Values<'py, f64>; 3],
    n: usize,
}

impl<'py> GroupedScores<'py> {
    /// Borrows the matrices (in this order), checks that their shapes agree, and borrows the
    /// optional per-context `log_z` (`None` is absent).
    pub(crate) fn of_model(
        target: &Bound<'py, PyAny>,
        model: &Bound<'py, PyAny>,
        proposal: &Bound<'py, PyAny>,
        log_z: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Self, Option<Values<'py, f64>>)> {
        let (t, rows, n) = matrix(div::TARGET, target)?;
        let (m, ..) = matrix(div::MODEL, model)?;
        let (q, ..) = matrix(div::PROPOSAL, proposal)?;
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
        let log_z = optional_vector("log_z", log_z)?;
        Ok((
            Self {
                arrays: [t, m, q],
                n,
            },
            log_z,
        ))
    }

    /// The kernels' view of them.
    pub(crate) fn view(&self) -> GroupedSamples<'_> {
        let [t, m, q] = &self.arrays;
        GroupedSamples {
            target: t.as_slice(),
            model: m.as_slice(),
            proposal: q.as_slice(),
            n: self.n,
        }
    }
}

/// Writes a `#[pyfunction]` over samples' log-scores, with one of the two Python signatures
/// such functions have: a divergence estimate's, `(kind, target_log_scores, model_log_probs,
/// proposal_log_probs, log_z=None)`, or an f-DPG kernel's, `(kind, policy_log_probs,
/// target_log_scores, proposal_log_probs, log_z)`. The reader named before the body
/// ([`Scores`], or [`GroupedScores`] for the first signature) borrows and checks the arrays;
/// the body sees `py`, the divergence, the reader's view of the arrays and its `log_z` under
/// the names it gives them. (`f_pseudo_rewards`, which takes one argument more, is written
/// out: generated here it measured slower in `benches/diagnosis/ab_kernels.py`, although
/// the code it expands to is the same.)
macro_rules! scores_binding {
    (
        $(#[$doc:meta])*
        fn $name:ident(kind, target_log_scores, model_log_probs, proposal_log_probs, log_z=None)
            -> $ret:ty;
        $($rest:tt)*
    ) => {
        $crate::python::scores::scores_binding! {
            @emit $(#[$doc])*
            signature (kind, target_log_scores, model_log_probs, proposal_log_probs, log_z=None)
            fn $name(target_log_scores, model_log_probs, proposal_log_probs,
                log_z: Option<&Bound<'py, PyAny>>) -> $ret;
            of_model $($rest)*
        }
    };
    (
        $(#[$doc:meta])*
        fn $name:ident(kind, policy_log_probs, target_log_scores, proposal_log_probs, log_z)
            -> $ret:ty;
        $($rest:tt)*
    ) => {
        $crate::python::scores::scores_binding! {
            @emit $(#[$doc])*
            fn $name(policy_log_probs, target_log_scores, proposal_log_probs,
                log_z: &Bound<'py, PyAny>) -> $ret;
            of_policy $($rest)*
        }
    };
    (
        @emit $(#[$doc:meta])*
        $(signature $signature:tt)?
        fn $name:ident($a:ident, $b:ident, $c:ident, log_z: $z:ty) -> $ret:ty;
        $ctor:ident $reader:ident |$py:ident, $kind:ident, $s:ident, $log_z:ident| $body:expr
    ) => {
        $(#[$doc])*
        #[pyfunction]
        $(#[pyo3(signature = $signature)])?
        pub fn $name<'py>(
            $py: Python<'py>,
            kind: $crate::python::Wrap<$crate::divergence::Divergence>,
            $a: &Bound<'py, PyAny>,
            $b: &Bound<'py, PyAny>,
            $c: &Bound<'py, PyAny>,
            log_z: $z,
        ) -> PyResult<$ret> {
            let (scores, $log_z) = $crate::python::scores::$reader::$ctor($a, $b, $c, log_z)?;
            let ($kind, $s) = (kind.0, scores.view());
            $body
        }
    };
}
pub(crate) use scores_binding;
