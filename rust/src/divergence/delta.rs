//! The divergence estimates of `fused`, each with its delta-method standard error from the
//! same weights (see `crate::stderr` for the convention).
//!
//! With `a_i = p_i / q_i` and `b_i = pi_i / q_i`, every divergence is `mean_i g(a_i, b_i)`.
//! When `log Z` is given the draws are independent terms and `psi_i = g_i`. When it is
//! estimated from the same samples, `a_i = r_i / Ẑ` depends on all of them through
//! `Ẑ = mean r`; linearising in `Ẑ` adds `D a_i` to each term, with
//! `D = mean_i Ẑ ∂g_i/∂Ẑ`, so that `psi_i = g_i + D a_i`. Per divergence, with
//! `h = log(a/b)` and `ℓ = log(2a/(a+b))`:
//!
//! | divergence | `g` | `Ẑ ∂g/∂Ẑ` |
//! |---|---|---|
//! | `KL(p‖pi)` | `a h` | `-a (h + 1)` |
//! | `KL(pi‖p)` | `-b h` | `b` |
//! | TV | `½ |a - b|` | `-½ sign(a - b) a` |
//! | JS | `½ [a ℓ + b log(2b/(a+b))]` | `-½ a ℓ` |

use super::scores::check_log_z;
use super::{Divergence, LogScores};
use crate::consts::{softplus, LN2};
use crate::error::{invalid, Result};
use crate::logspace;
use crate::stderr::{stderr_of_influence, Estimate};

/// One divergence (`kl`, `reverse_kl`, `tv` or `js`) with its standard error; the value
/// agrees with [`super::estimate`] on the same input to rounding.
pub fn estimate_and_stderr(
    kind: Divergence,
    s: &LogScores<'_>,
    log_z: Option<f64>,
) -> Result<Estimate> {
    if matches!(kind, Divergence::PearsonChi2 | Divergence::NeymanChi2) {
        return Err(invalid(
            "the chi² divergences are estimated by f_divergence only, not by divergence",
        ));
    }
    s.validate(log_z)?;
    let log_r = s.target_log_ratios();
    let (lz, estimated) = match log_z {
        Some(z) => (check_log_z(z)?, false),
        None => (logspace::logmeanexp("log_ratios", &log_r)?, true),
    };
    let n = s.len();
    let mut g = Vec::with_capacity(n);
    let mut dz = Vec::with_capacity(n);
    let mut a_all = Vec::with_capacity(n);
    for (i, &lr) in log_r.iter().enumerate() {
        let la = lr - lz; // -inf where p = 0
        let lb = if s.model[i] == f64::NEG_INFINITY {
            f64::NEG_INFINITY
        } else {
            s.model[i] - s.proposal[i]
        };
        let (a, b) = (la.exp(), lb.exp());
        let (gi, di) = match kind {
            Divergence::ForwardKl if a > 0.0 => {
                if b == 0.0 {
                    return Ok(Estimate::INFINITE);
                }
                let h = s.target[i] - lz - s.model[i];
                (a * h, -a * (h + 1.0))
            }
            Divergence::ReverseKl if b > 0.0 => {
                if a == 0.0 {
                    return Ok(Estimate::INFINITE);
                }
                (b * (s.model[i] - s.target[i] + lz), b)
            }
            Divergence::TotalVariation => {
                let sign = if a > b {
                    1.0
                } else if a < b {
                    -1.0
                } else {
                    0.0
                };
                (0.5 * (a - b).abs(), -0.5 * sign * a)
            }
            Divergence::JensenShannon => {
                // log(2a/(a+b)) = ln 2 - softplus(log b - log a), and symmetrically.
                let left = if a > 0.0 {
                    a * (LN2 - softplus(lb - la))
                } else {
                    0.0
                };
                let right = if b > 0.0 {
                    b * (LN2 - softplus(la - lb))
                } else {
                    0.0
                };
                (0.5 * (left + right), -0.5 * left)
            }
            _ => (0.0, 0.0),
        };
        g.push(gi);
        dz.push(di);
        a_all.push(a);
    }
    let value = crate::vexp::compensated_sum(g.iter().copied()) / n as f64;
    if estimated {
        let d = crate::vexp::compensated_sum(dz.iter().copied()) / n as f64;
        for (gi, a) in g.iter_mut().zip(&a_all) {
            *gi += d * a;
        }
    }
    Ok(Estimate {
        value,
        stderr: stderr_of_influence(&g),
    })
}
