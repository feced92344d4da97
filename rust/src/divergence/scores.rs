//! The three per-sample log-score arrays every divergence kernel reads, and their one
//! validation (docs/design.md §4.4): `-inf` is an exact zero, NaN and `+inf` are refused, and a
//! sample drawn from the proposal cannot have probability zero under it.

use crate::error::{check_log_scores, check_same_length, invalid, Error, Result};
use crate::logspace;

/// `log P_i`: the unnormalised target.
pub const TARGET: &str = "target_log_scores";
/// `log pi_i` under its name in the divergence estimates.
pub const MODEL: &str = "model_log_probs";
/// `log pi_i` under its name in the f-DPG kernels.
pub const POLICY: &str = "policy_log_probs";
/// `log q_i`: the proposal the samples were drawn from.
pub const PROPOSAL: &str = "proposal_log_probs";

/// Per-sample log-scores of one context, with the name `model` goes by in messages.
#[derive(Clone, Copy)]
pub struct LogScores<'a> {
    /// `log P_i`, the unnormalised target.
    pub target: &'a [f64],
    /// `log pi_i`, the model (or policy) whose divergence from `p` is measured.
    pub model: &'a [f64],
    /// `log q_i`, the proposal the samples were drawn from.
    pub proposal: &'a [f64],
    /// [`MODEL`] or [`POLICY`]: what the caller called `model`.
    pub model_name: &'static str,
}

impl<'a> LogScores<'a> {
    /// The arrays of a divergence estimate (`model` is `model_log_probs`).
    pub fn new(target: &'a [f64], model: &'a [f64], proposal: &'a [f64]) -> Self {
        Self {
            target,
            model,
            proposal,
            model_name: MODEL,
        }
    }

    /// The arrays of an f-DPG kernel (`model` is `policy_log_probs`).
    pub fn of_policy(policy: &'a [f64], target: &'a [f64], proposal: &'a [f64]) -> Self {
        Self {
            target,
            model: policy,
            proposal,
            model_name: POLICY,
        }
    }

    /// The same samples with another model in place of `model` (the proposal itself, say).
    #[must_use]
    pub fn with_model(self, model: &'a [f64], model_name: &'static str) -> Self {
        Self {
            model,
            model_name,
            ..self
        }
    }

    /// The number of samples (valid after [`Self::check_shape`]).
    pub fn len(&self) -> usize {
        self.target.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.target.is_empty()
    }

    /// Equal lengths and at least one sample.
    pub fn check_shape(&self) -> Result<()> {
        check_same_length(&[
            (TARGET, self.target.len()),
            (self.model_name, self.model.len()),
            (PROPOSAL, self.proposal.len()),
        ])?;
        if self.target.is_empty() {
            return Err(invalid(format!(
                "{TARGET} is empty: at least one sample is needed"
            )));
        }
        Ok(())
    }

    /// The one validation, reporting the first problem in this order: lengths, an empty
    /// batch, NaN / `+inf` in each array, a proposal of probability zero under a target
    /// sample, `log_z` (given: finite; `None`: estimable, so some target sample is not
    /// `-inf`), a proposal of probability zero under a model sample.
    pub fn validate(&self, log_z: Option<f64>) -> Result<()> {
        if self.is_valid(log_z) {
            return Ok(());
        }
        self.first_problem(log_z)
    }

    /// One pass over the three arrays answering whether [`Self::validate`] accepts them:
    /// valid input (the common case) pays one fused scan instead of the five ordered ones,
    /// which run only to word the error.
    fn is_valid(&self, log_z: Option<f64>) -> bool {
        let n = self.target.len();
        if n == 0 || self.model.len() != n || self.proposal.len() != n {
            return false;
        }
        if log_z.is_some_and(|z| !z.is_finite()) {
            return false;
        }
        let mut valid = true;
        let mut any_target = false;
        for ((&t, &m), &q) in self.target.iter().zip(self.model).zip(self.proposal) {
            // `x < INF` is false exactly for NaN and +inf.
            let finite_or_zero = t < f64::INFINITY && m < f64::INFINITY && q < f64::INFINITY;
            let proposal_covers =
                q > f64::NEG_INFINITY || (t == f64::NEG_INFINITY && m == f64::NEG_INFINITY);
            valid &= finite_or_zero && proposal_covers;
            any_target |= t > f64::NEG_INFINITY;
        }
        valid && (log_z.is_some() || any_target)
    }

    /// The first problem in the documented order (called when [`Self::is_valid`] says there
    /// is one).
    fn first_problem(&self, log_z: Option<f64>) -> Result<()> {
        self.check_shape()?;
        check_log_scores(TARGET, self.target)?;
        check_log_scores(self.model_name, self.model)?;
        check_log_scores(PROPOSAL, self.proposal)?;
        self.check_proposal_under(self.target)?;
        match log_z {
            Some(z) => {
                check_log_z(z)?;
            }
            None if self.target.iter().all(|&v| v == f64::NEG_INFINITY) => {
                return Err(all_zero_target())
            }
            None => {}
        }
        self.check_proposal_under(self.model)
    }

    /// Refuses a proposal of probability zero where `scores` is not.
    fn check_proposal_under(&self, scores: &[f64]) -> Result<()> {
        let zero = |(&s, &q): (&f64, &f64)| s > f64::NEG_INFINITY && q == f64::NEG_INFINITY;
        match scores.iter().zip(self.proposal).position(zero) {
            Some(i) => Err(invalid(format!(
                "{PROPOSAL}[{i}] is -inf: a sample drawn from the proposal cannot have \
                 probability zero under it"
            ))),
            None => Ok(()),
        }
    }

    /// `log P_i - log q_i`, exactly `-inf` where the target is zero.
    ///
    /// Invariant: validated, so `log q_i` is finite wherever `log P_i` is.
    pub(crate) fn target_log_ratios(&self) -> Vec<f64> {
        log_ratios(self.target, self.proposal)
    }
}

/// `scores_i - log q_i`, exactly `-inf` where `scores_i` is (whatever `log q_i` is there).
pub(crate) fn log_ratios(scores: &[f64], proposal: &[f64]) -> Vec<f64> {
    (scores.iter().zip(proposal))
        .map(|(&s, &q)| if s == f64::NEG_INFINITY { s } else { s - q })
        .collect()
}

/// Estimates `log Z = logmeanexp(log P - log q)`; fails when every sample has zero target weight.
pub fn estimate_log_z(target: &[f64], proposal: &[f64]) -> Result<f64> {
    let s = LogScores::new(target, target, proposal);
    s.validate(None)?;
    logspace::logmeanexp("log_ratios", &s.target_log_ratios())
}

/// Checks a given `log Z`: it must be finite.
pub fn check_log_z(z: f64) -> Result<f64> {
    if !z.is_finite() {
        return Err(invalid(format!("log_z is {z}: it must be finite")));
    }
    Ok(z)
}

pub(crate) fn all_zero_target() -> Error {
    invalid(format!(
        "every entry of {TARGET} is -inf: the target gives zero weight to all samples, so \
         its normaliser and divergences cannot be estimated from them"
    ))
}
