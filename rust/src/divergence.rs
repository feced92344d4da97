//! Importance-sampling estimates of divergences between a normalised target
//! `p = P / Z` (known up to `Z`) and a model `pi`, from samples of a proposal `q`
//! (DESIGN §3, §5). All arithmetic is in log space; `-inf` log-scores are exact zeros.
//!
//! With `a_i = log P_i - log Z - log q_i` (so `e^a = p/q`) and `b_i = log pi_i - log q_i`:
//! - `KL(p‖pi) = mean_i e^{a_i} (log P_i - log Z - log pi_i)`
//! - `KL(pi‖p) = mean_i e^{b_i} (log pi_i - log P_i + log Z)`
//! - `TV(p, pi) = ½ mean_i |e^{a_i} - e^{b_i}|`
//! - `JS(p, pi) = ½ mean_i [e^{a_i} log(2p/(p+pi)) + e^{b_i} log(2pi/(p+pi))]`, the standard JS
//!   in nats (at most ln 2 in truth; each term is non-negative, so the estimate is too, but
//!   it is not clipped to the range: an estimate above ln 2 shows sampling noise).
//!
//! When `log Z` is not given it is `logmeanexp(log P - log q)` from the same samples, which
//! makes the forward-KL estimate self-normalised.

use rayon::prelude::*;

use crate::error::{check_log_scores, check_same_length, invalid, Result};
use crate::logspace;
use crate::vexp;

/// Which divergence to estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Divergence {
    /// `KL(p‖pi)`, the forward KL minimised by DPG.
    ForwardKl,
    /// `KL(pi‖p)`, the reverse KL (RLHF's objective).
    ReverseKl,
    /// Total variation distance.
    TotalVariation,
    /// Jensen–Shannon divergence (standard, in nats).
    JensenShannon,
}

/// The per-sample log-scores one estimate needs, with the names used in error messages.
pub struct Samples<'a> {
    pub target: &'a [f64],
    pub model: &'a [f64],
    pub proposal: &'a [f64],
}

pub const TARGET: &str = "target_log_scores";
pub const MODEL: &str = "model_log_probs";
pub const PROPOSAL: &str = "proposal_log_probs";

impl Samples<'_> {
    fn validate(&self) -> Result<()> {
        check_same_length(&[
            (TARGET, self.target.len()),
            (MODEL, self.model.len()),
            (PROPOSAL, self.proposal.len()),
        ])?;
        if self.target.is_empty() {
            return Err(invalid(format!(
                "{TARGET} is empty: at least one sample is needed"
            )));
        }
        check_log_scores(TARGET, self.target)?;
        check_log_scores(MODEL, self.model)?;
        check_log_scores(PROPOSAL, self.proposal)
    }

    /// `log P_i - log q_i`, exactly `-inf` where the target is zero.
    fn log_ratios(&self, ratio_of: &[f64]) -> Result<Vec<f64>> {
        ratio_of
            .iter()
            .zip(self.proposal)
            .enumerate()
            .map(|(i, (&num, &lq))| {
                if num == f64::NEG_INFINITY {
                    Ok(f64::NEG_INFINITY)
                } else if lq == f64::NEG_INFINITY {
                    Err(invalid(format!(
                        "{PROPOSAL}[{i}] is -inf: a sample drawn from the proposal cannot have \
                         probability zero under it"
                    )))
                } else {
                    Ok(num - lq)
                }
            })
            .collect()
    }
}

/// Estimates `log Z = logmeanexp(log P - log q)`; fails when every sample has zero target weight.
pub fn estimate_log_z(target: &[f64], proposal: &[f64]) -> Result<f64> {
    let s = Samples {
        target,
        model: target,
        proposal,
    };
    s.validate()?;
    let lw = s.log_ratios(target)?;
    log_z_from_ratios(&lw)
}

fn log_z_from_ratios(lw: &[f64]) -> Result<f64> {
    let log_z = logspace::logmeanexp("log_ratios", lw)?;
    if log_z == f64::NEG_INFINITY {
        return Err(invalid(format!(
            "every entry of {TARGET} is -inf: the target gives zero weight to all samples, so \
             its normaliser and divergences cannot be estimated from them"
        )));
    }
    Ok(log_z)
}

/// Estimates one divergence from one group of samples.
pub fn estimate(kind: Divergence, s: &Samples<'_>, log_z: Option<f64>) -> Result<f64> {
    s.validate()?;
    let lw = s.log_ratios(s.target)?;
    let log_z = match log_z {
        Some(z) if z.is_nan() || z == f64::INFINITY || z == f64::NEG_INFINITY => {
            return Err(invalid(format!("log_z is {z}: it must be finite")));
        }
        Some(z) => z,
        None => log_z_from_ratios(&lw)?,
    };
    let a: Vec<f64> = lw.iter().map(|&v| v - log_z).collect();
    let b = s.log_ratios(s.model)?;
    let n = a.len() as f64;
    Ok(match kind {
        Divergence::ForwardKl => weighted_log_gap(&a, s.target, s.model, log_z, n),
        Divergence::ReverseKl => weighted_log_gap(&b, s.model, s.target, -log_z, n),
        Divergence::TotalVariation => total_variation(&a, &b, n),
        Divergence::JensenShannon => jensen_shannon(&a, &b, n),
    })
}

/// `mean_i e^{w_i} (x_i - shift - y_i)`, with `0 · anything = 0` and `e^w · (+inf) = +inf`.
fn weighted_log_gap(w: &[f64], x: &[f64], y: &[f64], shift: f64, n: f64) -> f64 {
    let mut gap = Vec::with_capacity(w.len());
    for ((&wi, &xi), &yi) in w.iter().zip(x).zip(y) {
        if wi == f64::NEG_INFINITY {
            gap.push(0.0);
        } else if yi == f64::NEG_INFINITY {
            return f64::INFINITY;
        } else {
            gap.push(xi - shift - yi);
        }
    }
    let m = vexp::max_and_flag(w).0;
    vexp::dot_exp(w, &gap, m) * (m - n.ln()).exp()
}

fn shared_max(a: &[f64], b: &[f64]) -> f64 {
    vexp::max_and_flag(a).0.max(vexp::max_and_flag(b).0)
}

fn total_variation(a: &[f64], b: &[f64], n: f64) -> f64 {
    let m = shared_max(a, b);
    let terms = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (vexp::exp_nonpos(x - m) - vexp::exp_nonpos(y - m)).abs());
    0.5 * vexp::compensated_sum(terms) * (m - n.ln()).exp()
}

/// `log(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

fn jensen_shannon(a: &[f64], b: &[f64], n: f64) -> f64 {
    let m = shared_max(a, b);
    let ln2 = std::f64::consts::LN_2;
    let terms = a.iter().zip(b).map(|(&x, &y)| {
        let mut t = 0.0;
        if x > f64::NEG_INFINITY {
            // log(2p / (p + pi)) = ln 2 - softplus(log pi - log p)
            t += vexp::exp_nonpos(x - m) * (ln2 - softplus(y - x));
        }
        if y > f64::NEG_INFINITY {
            t += vexp::exp_nonpos(y - m) * (ln2 - softplus(x - y));
        }
        t
    });
    0.5 * vexp::compensated_sum(terms) * (m - n.ln()).exp()
}

/// Row-major `c x n` log-scores, one row per context.
pub struct GroupedSamples<'a> {
    pub target: &'a [f64],
    pub model: &'a [f64],
    pub proposal: &'a [f64],
    pub n: usize,
}

/// Estimates one divergence per context (row); each row has its own `Z`.
pub fn estimate_grouped(
    kind: Divergence,
    g: &GroupedSamples<'_>,
    log_z: Option<&[f64]>,
) -> Result<Vec<f64>> {
    check_same_length(&[
        (TARGET, g.target.len()),
        (MODEL, g.model.len()),
        (PROPOSAL, g.proposal.len()),
    ])?;
    let n = g.n.max(1);
    let c = g.target.len() / n;
    if let Some(z) = log_z {
        if z.len() != c {
            return Err(invalid(format!(
                "length mismatch: {TARGET} has {c} contexts (rows) but log_z has {} values",
                z.len()
            )));
        }
    }
    let rows: Vec<usize> = (0..c).collect();
    rows.par_iter()
        .map(|&r| {
            let span = r * n..(r + 1) * n;
            let s = Samples {
                target: &g.target[span.clone()],
                model: &g.model[span.clone()],
                proposal: &g.proposal[span],
            };
            estimate(kind, &s, log_z.map(|z| z[r]))
                .map_err(|e| invalid(format!("context (row) {r}: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whole support {0, 1, 2} with a uniform proposal: importance sampling is exact.
    fn exact_case() -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let p = [0.5f64, 0.3, 0.2];
        let pi = [0.2f64, 0.3, 0.5];
        let target: Vec<f64> = p.iter().map(|v| (v * 7.0).ln()).collect(); // Z = 7
        let model: Vec<f64> = pi.iter().map(|v| v.ln()).collect();
        let proposal = vec![(1.0f64 / 3.0).ln(); 3];
        (target, model, proposal)
    }

    #[test]
    fn exact_on_whole_support() {
        let (t, m, q) = exact_case();
        let s = Samples {
            target: &t,
            model: &m,
            proposal: &q,
        };
        let p = [0.5f64, 0.3, 0.2];
        let pi = [0.2f64, 0.3, 0.5];
        let kl: f64 = p.iter().zip(&pi).map(|(a, b)| a * (a / b).ln()).sum();
        let rkl: f64 = p.iter().zip(&pi).map(|(a, b)| b * (b / a).ln()).sum();
        let tv: f64 = 0.5 * p.iter().zip(&pi).map(|(a, b)| (a - b).abs()).sum::<f64>();
        let js: f64 = p
            .iter()
            .zip(&pi)
            .map(|(a, b)| {
                let mid = 0.5 * (a + b);
                0.5 * a * (a / mid).ln() + 0.5 * b * (b / mid).ln()
            })
            .sum();
        for (kind, want) in [
            (Divergence::ForwardKl, kl),
            (Divergence::ReverseKl, rkl),
            (Divergence::TotalVariation, tv),
            (Divergence::JensenShannon, js),
        ] {
            let got = estimate(kind, &s, None).unwrap();
            assert!((got - want).abs() < 1e-14, "{kind:?}: {got} vs {want}");
            let given = estimate(kind, &s, Some(7f64.ln())).unwrap();
            assert!(
                (given - want).abs() < 1e-14,
                "{kind:?} with Z: {given} vs {want}"
            );
        }
    }

    #[test]
    fn zero_probabilities_are_exact() {
        let t = [0.0, f64::NEG_INFINITY];
        let m = [f64::NEG_INFINITY, 0.0];
        let q = [0.5f64.ln(), 0.5f64.ln()];
        let s = Samples {
            target: &t,
            model: &m,
            proposal: &q,
        };
        assert_eq!(
            estimate(Divergence::ForwardKl, &s, None).unwrap(),
            f64::INFINITY
        );
        assert_eq!(
            estimate(Divergence::ReverseKl, &s, None).unwrap(),
            f64::INFINITY
        );
        assert!((estimate(Divergence::TotalVariation, &s, None).unwrap() - 1.0).abs() < 1e-15);
        let js = estimate(Divergence::JensenShannon, &s, None).unwrap();
        assert!((js - std::f64::consts::LN_2).abs() < 1e-15);
    }

    #[test]
    fn grouped_rows_are_independent() {
        let (t, m, q) = exact_case();
        let tt = [t.clone(), t].concat();
        let mm = [m.clone(), m].concat();
        let qq = [q.clone(), q].concat();
        let g = GroupedSamples {
            target: &tt,
            model: &mm,
            proposal: &qq,
            n: 3,
        };
        let out = estimate_grouped(Divergence::ForwardKl, &g, None).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], out[1]);
    }

    #[test]
    fn refuses_bad_input() {
        let s = Samples {
            target: &[0.0],
            model: &[0.0, 1.0],
            proposal: &[0.0],
        };
        assert!(estimate(Divergence::ForwardKl, &s, None)
            .unwrap_err()
            .to_string()
            .contains("mismatch"));
        let s = Samples {
            target: &[f64::NEG_INFINITY],
            model: &[0.0],
            proposal: &[0.0],
        };
        assert!(estimate(Divergence::ForwardKl, &s, None).is_err());
        let s = Samples {
            target: &[0.0],
            model: &[0.0],
            proposal: &[f64::NEG_INFINITY],
        };
        assert!(estimate(Divergence::ForwardKl, &s, None)
            .unwrap_err()
            .to_string()
            .contains("proposal_log_probs[0]"));
    }
}
