//! QRS estimates at one beta with their delta-method standard errors (see `crate::stderr` for
//! the convention), from unweighted samples `x_i ~ q`.
//!
//! With `r_i = e^{l_i}`, `m_i = min(r_i, β)`, `Z = mean r`, `Z_β = mean m`, `α_i = r_i / Z`,
//! `μ_i = m_i / Z_β` and `c_i = log(r_i / m_i) = max(l_i - log β, 0)`:
//!
//! - `AR(β) = mean(m / β)`, a plain mean: `psi_i = m_i / β`;
//! - `KL(p‖p_β) = mean(α c) + log(Z_β / Z)`: `psi_i = α_i c_i - (mean(α c) + 1) α_i + μ_i`;
//! - `TV(p, p_β) = ½ mean |α - μ|`: `psi_i = ½ |α_i - μ_i| + D_Z α_i + D_β μ_i`, with
//!   `D_Z = -½ mean(sign(α - μ) α)` and `D_β = ½ mean(sign(α - μ) μ)`;
//! - a feature's moment under `p_β`, `ν = mean(μ f)`: `psi_i = μ_i (f_i - ν)`.
//!
//! Every ratio is scale-free, so the sums run on `l_i - max l`: nothing overflows.

use super::LOG_RATIOS;
use crate::error::{check_finite_matrix, check_log_scores, invalid, Result};
use crate::stderr::{stderr_of_influence, Estimate};
use crate::vexp::compensated_sum;

/// QRS quantities at one beta, each with its standard error.
#[derive(Debug, Clone, PartialEq)]
pub struct PointEstimates {
    /// `AR(β)`.
    pub acceptance_rate: Estimate,
    /// `KL(p‖p_β)` in nats.
    pub kl: Estimate,
    /// `TV(p, p_β)`.
    pub tv: Estimate,
    /// Moments of the features under `p_β`, one per column.
    pub moments: Vec<Estimate>,
}

/// The estimates at `log β` from the log-ratios of `n` samples of `q` and, optionally, a
/// row-major `n x k` feature matrix.
pub fn point_with_stderr(
    log_ratios: &[f64],
    log_beta: f64,
    features: Option<(&[f64], usize)>,
) -> Result<PointEstimates> {
    if log_ratios.is_empty() {
        return Err(invalid(format!(
            "{LOG_RATIOS} is empty: at least one sample is needed"
        )));
    }
    check_log_scores(LOG_RATIOS, log_ratios)?;
    if !log_beta.is_finite() {
        return Err(invalid(format!(
            "log_beta is {log_beta}: log(beta) must be finite (beta > 0 and finite)"
        )));
    }
    let top = log_ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if top == f64::NEG_INFINITY {
        return Err(invalid(format!(
            "every entry of {LOG_RATIOS} is -inf: the target gives zero weight to all samples"
        )));
    }
    if let Some((f, k)) = features {
        if f.len() != log_ratios.len() * k {
            return Err(invalid(format!(
                "length mismatch: {LOG_RATIOS} has {} values but features has {} rows of {k}",
                log_ratios.len(),
                f.len().checked_div(k).unwrap_or(0)
            )));
        }
        check_finite_matrix("features", f, k)?;
    }
    let n = log_ratios.len() as f64;
    let b = log_beta - top;
    let r: Vec<f64> = log_ratios.iter().map(|&l| (l - top).exp()).collect();
    let m: Vec<f64> = log_ratios.iter().map(|&l| (l - top).min(b).exp()).collect();
    let z = compensated_sum(r.iter().copied()) / n;
    let z_beta = compensated_sum(m.iter().copied()) / n;
    let alpha: Vec<f64> = r.iter().map(|v| v / z).collect();
    let mu: Vec<f64> = m.iter().map(|v| v / z_beta).collect();
    let clip: Vec<f64> = log_ratios
        .iter()
        .map(|&l| if l > log_beta { l - log_beta } else { 0.0 })
        .collect();
    let mean = |v: &mut dyn Iterator<Item = f64>| compensated_sum(v) / n;

    let beta = b.exp();
    let ar: Vec<f64> = m.iter().map(|v| (v / beta).min(1.0)).collect();
    let acceptance_rate = Estimate {
        value: mean(&mut ar.iter().copied()),
        stderr: stderr_of_influence(&ar),
    };

    let clipped_part = mean(&mut alpha.iter().zip(&clip).map(|(a, c)| a * c));
    let kl_value = (clipped_part + (z_beta / z).ln()).max(0.0);
    let kl_psi: Vec<f64> = (0..r.len())
        .map(|i| alpha[i] * clip[i] - (clipped_part + 1.0) * alpha[i] + mu[i])
        .collect();
    let kl = Estimate {
        value: kl_value,
        stderr: stderr_of_influence(&kl_psi),
    };

    let sign = |i: usize| (alpha[i] - mu[i]).signum() * f64::from(alpha[i] != mu[i]);
    let d_z = -0.5 * mean(&mut (0..r.len()).map(|i| sign(i) * alpha[i]));
    let d_beta = 0.5 * mean(&mut (0..r.len()).map(|i| sign(i) * mu[i]));
    let tv_terms: Vec<f64> = (0..r.len())
        .map(|i| 0.5 * (alpha[i] - mu[i]).abs())
        .collect();
    let tv_psi: Vec<f64> = (0..r.len())
        .map(|i| tv_terms[i] + d_z * alpha[i] + d_beta * mu[i])
        .collect();
    let tv = Estimate {
        value: mean(&mut tv_terms.iter().copied()).clamp(0.0, 1.0),
        stderr: stderr_of_influence(&tv_psi),
    };

    let moments = match features {
        Some((f, k)) => (0..k)
            .map(|j| {
                let nu = mean(&mut mu.iter().enumerate().map(|(i, w)| w * f[i * k + j]));
                let psi: Vec<f64> = mu
                    .iter()
                    .enumerate()
                    .map(|(i, w)| w * (f[i * k + j] - nu))
                    .collect();
                Estimate {
                    value: nu,
                    stderr: stderr_of_influence(&psi),
                }
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(PointEstimates {
        acceptance_rate,
        kl,
        tv,
        moments,
    })
}
