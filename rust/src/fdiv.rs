//! f-divergences `D_f(pi ‖ p) = Σ p f(pi/p)` for f-DPG (DESIGN §5): per-sample pseudo-rewards
//! for the policy-gradient loss and importance-sampling estimates of the divergence itself.
//!
//! Everything is a function of `log t = log pi - log P + log Z` (t = pi/p) so that no ratio is
//! ever formed outside log space. Samples come from a proposal `q`; `w = pi/q` weighs the
//! gradient `E_q[w f'(t) ∇log pi]`, whose loss is `-mean(w (r - b) log pi)` with `r = -f'(t)`.

use crate::consts::softplus;
use crate::divergence::{check_log_z, Divergence};
use crate::error::{check_log_scores, check_same_length, invalid, Result};

const LN_2: f64 = std::f64::consts::LN_2;

/// The generators `f` of the divergences: [`Divergence`] is the one enum of the core.
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
            Self::JensenShannon => LN_2 - softplus(-log_t),
            Self::PearsonChi2 => 2.0 * log_t.exp_m1(),
            // 1 - 1/t² = -expm1(-2 log t)
            Self::NeymanChi2 => -(-2.0 * log_t).exp_m1(),
        }
    }

    /// `f(t)` from `log t` for finite `log t`.
    fn f(self, log_t: f64) -> f64 {
        match self {
            Self::ForwardKl => -log_t,
            Self::ReverseKl => log_t.exp() * log_t,
            Self::TotalVariation => 0.5 * log_t.exp_m1().abs(),
            Self::JensenShannon => {
                log_t.exp() * (LN_2 - softplus(-log_t)) + (LN_2 - softplus(log_t))
            }
            Self::PearsonChi2 => log_t.exp_m1().powi(2),
            Self::NeymanChi2 => log_t.exp_m1().powi(2) * (-log_t).exp(),
        }
    }

    /// `f(0) = lim_{t→0} f(t)`: the contribution per unit of `p` where `pi = 0`.
    fn f_at_zero(self) -> f64 {
        match self {
            Self::ForwardKl | Self::NeymanChi2 => f64::INFINITY,
            Self::ReverseKl => 0.0,
            Self::TotalVariation => 0.5,
            Self::JensenShannon => LN_2,
            Self::PearsonChi2 => 1.0,
        }
    }

    /// `lim_{t→∞} f(t)/t`: the contribution per unit of `pi` where `p = 0`.
    fn slope_at_infinity(self) -> f64 {
        match self {
            Self::ForwardKl => 0.0,
            Self::ReverseKl | Self::PearsonChi2 => f64::INFINITY,
            Self::TotalVariation => 0.5,
            Self::JensenShannon => LN_2,
            Self::NeymanChi2 => 1.0,
        }
    }
}

/// Per-sample log-scores for one context.
pub struct Batch<'a> {
    /// `log pi_i`, the policy.
    pub policy: &'a [f64],
    /// `log P_i`, the unnormalised target.
    pub target: &'a [f64],
    /// `log q_i`, the proposal the samples were drawn from.
    pub proposal: &'a [f64],
}

impl Batch<'_> {
    fn validate(&self) -> Result<()> {
        check_same_length(&[
            ("policy_log_probs", self.policy.len()),
            ("target_log_scores", self.target.len()),
            ("proposal_log_probs", self.proposal.len()),
        ])?;
        if self.policy.is_empty() {
            return Err(invalid(
                "policy_log_probs is empty: at least one sample is needed",
            ));
        }
        check_log_scores("policy_log_probs", self.policy)?;
        check_log_scores("target_log_scores", self.target)?;
        check_log_scores("proposal_log_probs", self.proposal)?;
        if let Some(i) = self.proposal.iter().position(|&v| v == f64::NEG_INFINITY) {
            return Err(invalid(format!(
                "proposal_log_probs[{i}] is -inf: a sample drawn from the proposal cannot have \
                 probability zero under it"
            )));
        }
        Ok(())
    }
}

/// Importance weights `w_i = pi_i / q_i` and weighted pseudo-rewards `w_i r_i`, `r_i = -f'(t_i)`.
///
/// `log t` is capped at `max_log_t` so that samples the target rules out (`P = 0`, `t = ∞`)
/// get a large finite reward under losses whose `f'` is unbounded (reverse KL, Pearson chi²)
/// instead of an infinite one. Where `pi = 0` both outputs are exactly 0.
pub fn pseudo_rewards(
    kind: Divergence,
    batch: &Batch<'_>,
    log_z: f64,
    max_log_t: f64,
    weights: &mut [f64],
    weighted_rewards: &mut [f64],
) -> Result<()> {
    batch.validate()?;
    check_log_z(log_z)?;
    if max_log_t.is_nan() || max_log_t <= 0.0 {
        return Err(invalid(format!(
            "max_log_t must be positive, got {max_log_t}"
        )));
    }
    for i in 0..batch.policy.len() {
        let (lpi, lp, lq) = (batch.policy[i], batch.target[i], batch.proposal[i]);
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
pub fn estimate(kind: Divergence, batch: &Batch<'_>, log_z: f64) -> Result<(f64, f64)> {
    batch.validate()?;
    check_log_z(log_z)?;
    let n = batch.policy.len();
    let mut terms = Vec::with_capacity(n);
    for i in 0..n {
        let (lpi, lp, lq) = (batch.policy[i], batch.target[i], batch.proposal[i]);
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
    let scale = if kind == Divergence::JensenShannon {
        0.5
    } else {
        1.0
    };
    if terms.iter().any(|t| t.is_infinite()) {
        return Ok((f64::INFINITY, f64::INFINITY));
    }
    let mean = crate::vexp::compensated_sum(terms.iter().copied()) / n as f64;
    let var = if n > 1 {
        crate::vexp::compensated_sum(terms.iter().map(|t| (t - mean).powi(2))) / (n - 1) as f64
    } else {
        f64::NAN
    };
    Ok((scale * mean, scale * (var / n as f64).sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Divergence; 6] = [
        Divergence::ForwardKl,
        Divergence::ReverseKl,
        Divergence::TotalVariation,
        Divergence::JensenShannon,
        Divergence::PearsonChi2,
        Divergence::NeymanChi2,
    ];

    #[test]
    fn f_prime_matches_finite_differences_of_f() {
        for kind in ALL {
            for &t in &[0.05f64, 0.4, 0.9, 1.7, 6.0] {
                if kind == Divergence::TotalVariation {
                    continue; // not differentiable at 1, piecewise constant slope elsewhere
                }
                let h = 1e-6 * t;
                let numeric = (kind.f((t + h).ln()) - kind.f((t - h).ln())) / (2.0 * h);
                let analytic = kind.f_prime(t.ln());
                assert!(
                    (numeric - analytic).abs() < 1e-6 * (1.0 + analytic.abs()),
                    "{kind:?} at {t}"
                );
            }
            assert!(kind.f(0.0).abs() < 1e-15, "{kind:?}: f(1) must be 0");
        }
    }

    #[test]
    fn exact_on_a_whole_support() {
        let p = [0.5f64, 0.3, 0.2, 0.0];
        let pi = [0.25f64, 0.25, 0.4, 0.1];
        let q = [0.25f64; 4];
        let lp: Vec<f64> = p.iter().map(|v| (v * 3.0).ln()).collect(); // Z = 3
        let lpi: Vec<f64> = pi.iter().map(|v| v.ln()).collect();
        let lq: Vec<f64> = q.iter().map(|v| v.ln()).collect();
        let batch = Batch {
            policy: &lpi,
            target: &lp,
            proposal: &lq,
        };
        let tv = 0.5 * p.iter().zip(&pi).map(|(a, b)| (a - b).abs()).sum::<f64>();
        let (got, _) = estimate(Divergence::TotalVariation, &batch, 3f64.ln()).unwrap();
        assert!((got - tv).abs() < 1e-14, "{got} vs {tv}");
        let js: f64 = p
            .iter()
            .zip(&pi)
            .map(|(a, b)| {
                let m = 0.5 * (a + b);
                let l = if *a > 0.0 { a * (a / m).ln() } else { 0.0 };
                0.5 * l + 0.5 * b * (b / m).ln()
            })
            .sum();
        let (got, _) = estimate(Divergence::JensenShannon, &batch, 3f64.ln()).unwrap();
        assert!((got - js).abs() < 1e-14, "{got} vs {js}");
        let neyman: f64 = p.iter().zip(&pi).map(|(a, b)| (a - b).powi(2) / b).sum();
        let (got, _) = estimate(Divergence::NeymanChi2, &batch, 3f64.ln()).unwrap();
        assert!((got - neyman).abs() < 1e-13, "{got} vs {neyman}");
        let (rkl, _) = estimate(Divergence::ReverseKl, &batch, 3f64.ln()).unwrap();
        assert_eq!(rkl, f64::INFINITY);
    }

    #[test]
    fn rewards_are_finite_where_the_target_is_zero() {
        let batch = Batch {
            policy: &[-1.0, f64::NEG_INFINITY],
            target: &[f64::NEG_INFINITY, 0.0],
            proposal: &[-1.0, -1.0],
        };
        for kind in ALL {
            let (mut w, mut wr) = ([0.0; 2], [0.0; 2]);
            pseudo_rewards(kind, &batch, 0.0, 30.0, &mut w, &mut wr).unwrap();
            assert!(w[0] == 1.0 && wr[0].is_finite(), "{kind:?}");
            assert!(w[1] == 0.0 && wr[1] == 0.0, "{kind:?}");
        }
    }
}
