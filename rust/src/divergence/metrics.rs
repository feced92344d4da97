//! Every number the tuner tracks for one context, from one validation of the arrays it
//! scores (docs/design.md §5.4): the divergences of the target from the policy and from the
//! proposal, the loss's own divergence with its standard error, the ESS of the importance
//! weights, the policy's feature moments and its KL from the base model.

use super::{delta, fdiv, fused, scores, Divergence, LogScores, PROPOSAL};
use crate::error::{check_log_scores, check_same_length, Result};
use crate::logspace;
use crate::stderr;

/// The arrays one context's metrics are computed from.
pub struct MetricsInput<'a> {
    /// `log P`, `log pi` (the policy) and `log q` of the context's samples.
    pub scores: LogScores<'a>,
    /// The context's `log Z`.
    pub log_z: f64,
    /// The divergence the loss minimises.
    pub loss: Divergence,
    /// Row-major `n x k` feature values of the samples, with `k`.
    pub features: Option<(&'a [f64], usize)>,
    /// `log a`, the base model's log-probabilities of the samples.
    pub base: Option<&'a [f64]>,
}

/// The name of [`MetricsInput::features`] in messages.
pub const FEATURES: &str = "features";
/// The name of [`MetricsInput::base`] in messages.
pub const BASE: &str = "base_log_probs";

/// What [`tuner_metrics`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// Named scalars, in the order the tuner reports them.
    pub scalars: Vec<(&'static str, f64)>,
    /// The policy's self-normalised feature moments (when features were given).
    pub moments: Option<Vec<f64>>,
    /// The standard errors of [`Self::moments`].
    pub moment_stderrs: Option<Vec<f64>>,
    /// `KL(pi ‖ a)` (when the base was given).
    pub kl_policy_base: Option<f64>,
    /// The standard error of [`Self::kl_policy_base`].
    pub kl_policy_base_stderr: Option<f64>,
}

/// Computes the tracked metrics of one context.
///
/// The loss's divergence `D_f(pi ‖ p)` comes with its standard error; where it is also one of
/// the tracked `target_policy` divergences (KL, TV, JS) that estimate is reused, not made twice.
/// `KL(p ‖ pi)`, `KL(pi ‖ a)` and the moments carry their delta-method standard errors
/// (`crate::stderr`), from the same weights.
pub fn tuner_metrics(input: &MetricsInput<'_>) -> Result<Metrics> {
    let s = input.scores;
    let log_z = input.log_z;
    s.validate(Some(log_z))?;
    if let Some(base) = input.base {
        check_same_length(&[(s.model_name, s.len()), (BASE, base.len())])?;
        check_log_scores(BASE, base)?;
    }
    let (divergence, divergence_stderr) = fdiv::estimate_validated(input.loss, &s, log_z);
    let of_policy = |kind: Divergence| {
        if kind == input.loss {
            Ok(divergence)
        } else {
            fused::estimate(kind, &s, Some(log_z))
        }
    };
    let of_proposal =
        |kind| fused::estimate(kind, &s.with_model(s.proposal, PROPOSAL), Some(log_z));
    let ratios = s.target_log_ratios();
    let ess = if ratios.iter().any(|&r| r > f64::NEG_INFINITY) {
        logspace::effective_sample_size("log_ratios", &ratios)?
    } else {
        0.0
    };
    let scalars = vec![
        ("kl_target_policy", of_policy(Divergence::ForwardKl)?),
        (
            "kl_target_policy_stderr",
            delta::estimate_and_stderr(Divergence::ForwardKl, &s, Some(log_z))?.stderr,
        ),
        ("kl_target_proposal", of_proposal(Divergence::ForwardKl)?),
        (
            "tv_target_proposal",
            of_proposal(Divergence::TotalVariation)?,
        ),
        (
            "js_target_proposal",
            of_proposal(Divergence::JensenShannon)?,
        ),
        ("tv_target_policy", of_policy(Divergence::TotalVariation)?),
        ("js_target_policy", of_policy(Divergence::JensenShannon)?),
        ("log_z", log_z),
        ("ess", ess),
        ("divergence", divergence),
        ("divergence_stderr", divergence_stderr),
    ];
    let (moments, moment_stderrs) = match input.features {
        Some((features, k)) => {
            let log_w = scores::log_ratios(s.model, s.proposal);
            let (values, errors) =
                stderr::weighted_moments("log_weights", &log_w, FEATURES, features, k)?;
            (Some(values), Some(errors))
        }
        None => (None, None),
    };
    let (kl_policy_base, kl_policy_base_stderr) = match input.base {
        Some(base) => {
            let vs_base = LogScores::new(base, s.model, s.proposal);
            let e = delta::estimate_and_stderr(Divergence::ReverseKl, &vs_base, Some(0.0))?;
            (
                Some(fused::estimate(Divergence::ReverseKl, &vs_base, Some(0.0))?),
                Some(e.stderr),
            )
        }
        None => (None, None),
    };
    Ok(Metrics {
        scalars,
        moments,
        moment_stderrs,
        kl_policy_base,
        kl_policy_base_stderr,
    })
}
