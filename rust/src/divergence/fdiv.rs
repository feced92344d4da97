//! f-divergences `D_f(pi ‖ p) = Σ p f(pi/p)` for f-DPG (docs/design.md §6.1): per-sample
//! pseudo-rewards for the policy-gradient loss and importance-sampling estimates of the
//! divergence itself.
//!
//! Everything is a function of `log t = log pi - log P + log Z` (t = pi/p) so that no ratio is
//! ever formed outside log space. Samples come from a proposal `q`; `w = pi/q` weighs the
//! gradient `E_q[w f'(t) ∇log pi]`, whose loss is `-mean(w (r - b) log pi)` with `r = -f'(t)`.
//! The generators `f` themselves are methods of [`Divergence`].

use super::{Divergence, LogScores};
use crate::error::{invalid, Result};

/// Importance weights `w_i = pi_i / q_i` and weighted pseudo-rewards `w_i r_i`, `r_i = -f'(t_i)`.
///
/// `log t` is capped at `max_log_t` so that samples the target rules out (`P = 0`, `t = ∞`)
/// get a large finite reward under losses whose `f'` is unbounded (reverse KL, Pearson chi²)
/// instead of an infinite one. Where `pi = 0` both outputs are exactly 0.
pub fn pseudo_rewards(
    kind: Divergence,
    s: &LogScores<'_>,
    log_z: f64,
    max_log_t: f64,
    weights: &mut [f64],
    weighted_rewards: &mut [f64],
) -> Result<()> {
    s.validate(Some(log_z))?;
    if max_log_t.is_nan() || max_log_t <= 0.0 {
        return Err(invalid(format!(
            "max_log_t must be positive, got {max_log_t}"
        )));
    }
    for i in 0..s.len() {
        let (lpi, lp, lq) = (s.model[i], s.target[i], s.proposal[i]);
        if lpi == f64::NEG_INFINITY {
            weights[i] = 0.0;
            weighted_rewards[i] = 0.0;
            continue;
        }
        let log_w = lpi - lq;
        let log_t = (lpi - lp + log_z).min(max_log_t);
        weights[i] = log_w.exp();
        weighted_rewards[i] = match kind {
            // w / t = P / (Z q): formed in log space so that a tiny t cannot overflow alone.
            Divergence::ForwardKl => (log_w - log_t).exp(),
            // w / t² · ... : 1/t² - 1 weighted, again in log space for tiny t.
            Divergence::NeymanChi2 => (log_w - 2.0 * log_t).exp() - weights[i],
            _ => -weights[i] * kind.f_prime(log_t),
        };
    }
    Ok(())
}

/// Importance-sampling estimate of `D_f(pi ‖ p)` and its standard error.
///
/// Terms are `(p_i/q_i) f(t_i)` where `p_i > 0`, and `(pi_i/q_i) lim f(t)/t` where `p_i = 0`
/// (the mass the policy puts outside the target's support). For Jensen–Shannon the result is
/// halved, to the standard JS in nats.
pub fn estimate_with_stderr(kind: Divergence, s: &LogScores<'_>, log_z: f64) -> Result<(f64, f64)> {
    s.validate(Some(log_z))?;
    Ok(estimate_validated(kind, s, log_z))
}

/// [`estimate_with_stderr`] on validated input.
pub(crate) fn estimate_validated(kind: Divergence, s: &LogScores<'_>, log_z: f64) -> (f64, f64) {
    let n = s.len();
    let mut terms = Vec::with_capacity(n);
    for i in 0..n {
        let (lpi, lp, lq) = (s.model[i], s.target[i], s.proposal[i]);
        let term = if lp == f64::NEG_INFINITY {
            if lpi == f64::NEG_INFINITY {
                0.0
            } else {
                (lpi - lq).exp() * kind.slope_at_infinity()
            }
        } else {
            let p_over_q = (lp - log_z - lq).exp();
            if lpi == f64::NEG_INFINITY {
                p_over_q * kind.f_at_zero()
            } else {
                p_over_q * kind.f(lpi - lp + log_z)
            }
        };
        terms.push(term);
    }
    if terms.iter().any(|t| t.is_infinite()) {
        return (f64::INFINITY, f64::INFINITY);
    }
    let mean = crate::vexp::compensated_sum(terms.iter().copied()) / n as f64;
    let var = if n > 1 {
        crate::vexp::compensated_sum(terms.iter().map(|t| (t - mean).powi(2))) / (n - 1) as f64
    } else {
        f64::NAN
    };
    let scale = kind.scale();
    (scale * mean, scale * (var / n as f64).sqrt())
}
