//! Divergences between a normalised target `p = P / Z` (known up to `Z`) and a model `pi`,
//! estimated by importance sampling from a proposal `q` (docs/design.md §5.1).
//!
//! - [`Divergence`] (here): the one divergence type, parsed once from its name, with its
//!   generator `f` of `D_f(pi ‖ p) = Σ p f(pi/p)`. Adding a divergence is one variant, one
//!   name in `FromStr` and one arm in each generator method below.
//! - [`LogScores`] (`scores`): the three per-sample log-score arrays, their one validation
//!   and the `log Z` checks.
//! - `fused`: the vectorised single-number estimates ([`estimate`]) and one per context
//!   ([`estimate_grouped`]).
//! - `delta`: the same estimates with their delta-method standard errors.
//! - `fdiv`: f-DPG's pseudo-rewards and the estimate with its standard error, for any `f`.
//! - `metrics`: every number the tuner tracks for one context, from one validation.

mod delta;
mod fdiv;
mod fused;
mod metrics;
mod scores;
#[cfg(test)]
mod tests;

pub use delta::estimate_and_stderr;
pub use fdiv::{estimate_with_stderr, pseudo_rewards};
pub use fused::{estimate, estimate_grouped, GroupedSamples};
pub use metrics::{tuner_metrics, Metrics, MetricsInput, BASE, FEATURES};
pub use scores::{check_log_z, estimate_log_z, LogScores, MODEL, POLICY, PROPOSAL, TARGET};

use crate::consts::{softplus, LN2};
use crate::error::{invalid, Result};

/// The one divergence type of the core: an f-divergence `D_f(pi ‖ p) = Σ p f(pi/p)`, parsed
/// once from its name (`FromStr`, at the binding). [`estimate`] covers the first four; the
/// f-DPG kernels all six, through their generators `f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Divergence {
    /// `KL(p‖pi)`, the forward KL minimised by DPG / CDPG: `f(t) = -log t`.
    ForwardKl,
    /// `KL(pi‖p)`, the reverse KL (RLHF's objective): `f(t) = t log t`.
    ReverseKl,
    /// Total variation distance: `f(t) = |t - 1| / 2`.
    TotalVariation,
    /// Jensen–Shannon divergence (standard, in nats; the generator `f` below is twice it).
    JensenShannon,
    /// Pearson chi², `Σ (pi - p)² / p`: `f(t) = (t - 1)²`.
    PearsonChi2,
    /// Neyman chi², `Σ (p - pi)² / pi`: `f(t) = (1 - t)² / t`.
    NeymanChi2,
}

impl std::str::FromStr for Divergence {
    type Err = crate::Error;

    /// Parses the names used by the Python layer.
    fn from_str(name: &str) -> Result<Self> {
        Ok(match name {
            "kl" | "forward_kl" => Self::ForwardKl,
            "reverse_kl" => Self::ReverseKl,
            "tv" => Self::TotalVariation,
            "js" => Self::JensenShannon,
            "chi2" | "pearson_chi2" => Self::PearsonChi2,
            "reverse_chi2" | "neyman_chi2" => Self::NeymanChi2,
            other => {
                return Err(invalid(format!(
                    "unknown f-divergence {other:?}: expected 'kl', 'reverse_kl', 'tv', 'js', \
                     'chi2' or 'reverse_chi2'"
                )))
            }
        })
    }
}

/// The generators `f` (docs/design.md §6.2), all as functions of `log t`, `t = pi/p`.
impl Divergence {
    /// `f'(t)` from `log t`, stable over the whole range (`log t` may be ±inf).
    pub fn f_prime(self, log_t: f64) -> f64 {
        match self {
            Self::ForwardKl => -(-log_t).exp(),
            Self::ReverseKl => log_t + 1.0,
            Self::TotalVariation => {
                if log_t > 0.0 {
                    0.5
                } else if log_t < 0.0 {
                    -0.5
                } else {
                    0.0
                }
            }
            // log(2t / (1 + t)) = ln 2 - softplus(-log t)
            Self::JensenShannon => LN2 - softplus(-log_t),
            Self::PearsonChi2 => 2.0 * log_t.exp_m1(),
            // 1 - 1/t² = -expm1(-2 log t)
            Self::NeymanChi2 => -(-2.0 * log_t).exp_m1(),
        }
    }

    /// `f(t)` from `log t` for finite `log t`.
    pub(crate) fn f(self, log_t: f64) -> f64 {
        match self {
            Self::ForwardKl => -log_t,
            Self::ReverseKl => log_t.exp() * log_t,
            Self::TotalVariation => 0.5 * log_t.exp_m1().abs(),
            Self::JensenShannon => log_t.exp() * (LN2 - softplus(-log_t)) + (LN2 - softplus(log_t)),
            Self::PearsonChi2 => log_t.exp_m1().powi(2),
            Self::NeymanChi2 => log_t.exp_m1().powi(2) * (-log_t).exp(),
        }
    }

    /// `f(0) = lim_{t→0} f(t)`: the contribution per unit of `p` where `pi = 0`.
    pub(crate) fn f_at_zero(self) -> f64 {
        match self {
            Self::ForwardKl | Self::NeymanChi2 => f64::INFINITY,
            Self::ReverseKl => 0.0,
            Self::TotalVariation => 0.5,
            Self::JensenShannon => LN2,
            Self::PearsonChi2 => 1.0,
        }
    }

    /// `lim_{t→∞} f(t)/t`: the contribution per unit of `pi` where `p = 0`.
    pub(crate) fn slope_at_infinity(self) -> f64 {
        match self {
            Self::ForwardKl => 0.0,
            Self::ReverseKl | Self::PearsonChi2 => f64::INFINITY,
            Self::TotalVariation => 0.5,
            Self::JensenShannon => LN2,
            Self::NeymanChi2 => 1.0,
        }
    }

    /// The factor from `Σ p f(t)` to the reported divergence: the standard JS is half of
    /// its generator's `D_f`.
    pub(crate) fn scale(self) -> f64 {
        if self == Self::JensenShannon {
            0.5
        } else {
            1.0
        }
    }
}
