//! Estimates with their standard errors, from one set of importance weights.
//!
//! Every estimate here is a smooth function `F` of a few sample means over `n` draws, so its
//! first-order (delta-method) error is the mean of one influence value per draw,
//! `psi_i = ∇F · z_i`, and its standard error is `sqrt(Σ (psi_i - mean psi)²) / n`. The
//! divisor is `n` (the plug-in variance) rather than `n - 1` so that a sample repeated `k`
//! times has exactly `1/√k` of the error: repeats add no information the estimate can see,
//! and the error must say so. For weights that are all equal (samples from the distribution
//! itself) the moment of a 0/1 feature gets the binomial `sqrt(p (1 - p) / n)`.

use crate::error::{check_finite_matrix, Result};
use crate::logspace;

/// A value and its standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub stderr: f64,
}

impl Estimate {
    /// An estimate that is infinite (a KL where one side has mass the other lacks): the
    /// error is infinite too, as no finite interval holds it.
    pub const INFINITE: Self = Self {
        value: f64::INFINITY,
        stderr: f64::INFINITY,
    };
}

/// `sqrt(Σ (psi_i - mean psi)²) / n` by two compensated passes.
pub fn stderr_of_influence(psi: &[f64]) -> f64 {
    let n = psi.len() as f64;
    let mean = crate::vexp::compensated_sum(psi.iter().copied()) / n;
    crate::vexp::compensated_sum(psi.iter().map(|p| (p - mean) * (p - mean))).sqrt() / n
}

/// `a_i = w_i / mean(w)` from log-weights `l_i` (`w = e^l`), so that `mean a = 1`; exactly 0
/// where `l_i = -inf`. Fails as `normalized_weights` does on empty, NaN, `+inf` or all `-inf`.
pub fn unit_mean_weights(arg: &str, log_w: &[f64]) -> Result<Vec<f64>> {
    let mut a = vec![0.0; log_w.len()];
    logspace::normalized_weights_into(arg, log_w, &mut a)?;
    let n = log_w.len() as f64;
    for v in &mut a {
        *v *= n;
    }
    Ok(a)
}

/// Self-normalised moments `Σ_i ω_i f_ik` of a row-major `n x k` feature matrix, with
/// `ω_i ∝ e^{l_i}`, and their standard errors `sqrt(Σ_i ω_i² (f_ik - μ_k)²)`.
///
/// The moment is the ratio `mean(w f) / mean(w)`, whose influence values are
/// `a_i (f_ik - μ_k)` with `a_i = w_i / mean w` (mean exactly 0, so no centring is needed).
pub fn weighted_moments(
    weights_arg: &str,
    log_w: &[f64],
    features_arg: &str,
    features: &[f64],
    k: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let values = logspace::weighted_moments(weights_arg, log_w, features_arg, features, k)?;
    if values.is_empty() {
        return Ok((values, Vec::new()));
    }
    check_finite_matrix(features_arg, features, k)?;
    let mut omega = vec![0.0; log_w.len()];
    logspace::normalized_weights_into(weights_arg, log_w, &mut omega)?;
    let stderrs = (0..k)
        .map(|j| {
            let mu = values[j];
            crate::vexp::compensated_sum(omega.iter().enumerate().map(|(i, w)| {
                let d = w * (features[i * k + j] - mu);
                d * d
            }))
            .sqrt()
        })
        .collect();
    Ok((values, stderrs))
}

/// The effective sample size `(Σ w)² / Σ w²` with its delta-method standard error.
///
/// `ESS = n B² / C` with `B = mean w`, `C = mean w²`; in units of `a = w / B` the influence
/// values are `n (2 a_i / c - a_i² / c²)` with `c = mean a²`.
pub fn effective_sample_size(arg: &str, log_w: &[f64]) -> Result<Estimate> {
    let value = logspace::effective_sample_size(arg, log_w)?;
    let a = unit_mean_weights(arg, log_w)?;
    let n = a.len() as f64;
    let c = crate::vexp::compensated_sum(a.iter().map(|v| v * v)) / n;
    let psi: Vec<f64> = a
        .iter()
        .map(|v| n * (2.0 * v / c - v * v / (c * c)))
        .collect();
    Ok(Estimate {
        value,
        stderr: stderr_of_influence(&psi),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_weights_give_the_binomial_error() {
        let lw = [0.0; 8];
        let f = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let (m, se) = weighted_moments("w", &lw, "f", &f, 1).unwrap();
        assert!((m[0] - 0.5).abs() < 1e-15);
        assert!((se[0] - (0.25f64 / 8.0).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn equal_weights_have_an_ess_of_n_and_no_error() {
        let e = effective_sample_size("w", &[-1.0; 5]).unwrap();
        assert!((e.value - 5.0).abs() < 1e-12);
        assert!(e.stderr.abs() < 1e-12);
    }
}
