//! Log-space reductions: log-sum-exp, normalised importance weights, effective sample size and
//! self-normalised moments (DESIGN §3). Edge cases follow `scipy.special.logsumexp`: an empty
//! input or one that is all `-inf` sums to `-inf`; `-inf` entries are exact zeros.

use crate::error::{check_finite_matrix, check_log_scores, invalid, Result};
use crate::vexp;

/// Maximum of `x`, refusing NaN and `+inf` (named `arg` in the error).
pub fn checked_max(arg: &str, x: &[f64]) -> Result<f64> {
    let (m, bad) = vexp::max_and_flag(x);
    if bad {
        check_log_scores(arg, x)?;
    }
    Ok(m)
}

/// `log Σ exp(x_i)`.
///
/// Naive formula `log(sum(exp(x)))`. Computed as `m + log Σ exp(x_i - m)` with `m = max x`;
/// when the other terms add up to less than the maximum term, that term is split off and
/// the rest enters through `log1p` so that tiny contributions are not rounded away (as scipy).
pub fn logsumexp(arg: &str, x: &[f64]) -> Result<f64> {
    let m = checked_max(arg, x)?;
    Ok(logsumexp_with_max(x, m))
}

/// [`logsumexp`] for input already known to be valid, with its maximum.
pub fn logsumexp_with_max(x: &[f64], m: f64) -> f64 {
    if m == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let total = vexp::sum_exp(x, m);
    if total >= 2.0 {
        return m + total.ln();
    }
    // Invariant: the first maximum contributes exactly 1 to `total`; summing the rest on
    // their own keeps their full relative precision.
    let j = x
        .iter()
        .position(|&v| v == m)
        .expect("the maximum is an element");
    let rest = vexp::sum_exp(&x[..j], m) + vexp::sum_exp(&x[j + 1..], m);
    m + rest.ln_1p()
}

/// `log(mean(exp(x)))`: the log of the importance-sampling estimate of Z; `-inf` when empty.
pub fn logmeanexp(arg: &str, x: &[f64]) -> Result<f64> {
    if x.is_empty() {
        return Ok(f64::NEG_INFINITY);
    }
    Ok(logsumexp(arg, x)? - (x.len() as f64).ln())
}

/// Normalised weights `w_i = exp(l_i - logsumexp(l))`, written into `out`.
pub fn normalized_weights_into(arg: &str, log_w: &[f64], out: &mut [f64]) -> Result<f64> {
    let lse = normalizer(arg, log_w)?;
    vexp::exp_into(log_w, lse, out);
    Ok(lse)
}

/// Effective sample size `1 / Σ w_i²` of normalised weights, as `(Σ e^l)² / Σ e^{2l}`.
pub fn effective_sample_size(arg: &str, log_w: &[f64]) -> Result<f64> {
    let lse = normalizer(arg, log_w)?;
    Ok(1.0 / vexp::sum_exp_sq(log_w, lse))
}

/// Self-normalised moments `Σ_i w_i f_ik` for a row-major `n x k` feature matrix.
pub fn weighted_moments(
    weights_arg: &str,
    log_w: &[f64],
    features_arg: &str,
    features: &[f64],
    k: usize,
) -> Result<Vec<f64>> {
    let n = log_w.len();
    if features.len() != n * k {
        return Err(invalid(format!(
            "length mismatch: {weights_arg} has {n} values but {features_arg} has {} rows",
            features.len().checked_div(k).unwrap_or(0)
        )));
    }
    check_finite_matrix(features_arg, features, k)?;
    let mut w = vec![0.0; n];
    normalized_weights_into(weights_arg, log_w, &mut w)?;
    let mut acc = vec![(0.0, 0.0); k];
    for (row, &wi) in features.chunks_exact(k.max(1)).zip(&w) {
        if wi == 0.0 {
            continue;
        }
        for (a, &f) in acc.iter_mut().zip(row) {
            vexp::neumaier_add(a, wi * f);
        }
    }
    Ok(acc.into_iter().map(|(s, c)| s + c).collect())
}

/// `logsumexp` of non-empty weights that are not all zero, as needed to normalise them.
fn normalizer(arg: &str, log_w: &[f64]) -> Result<f64> {
    if log_w.is_empty() {
        return Err(invalid(format!(
            "{arg} is empty: at least one weight is needed"
        )));
    }
    let lse = logsumexp(arg, log_w)?;
    if lse == f64::NEG_INFINITY {
        return Err(invalid(format!(
            "every entry of {arg} is -inf: weights that are all zero cannot be normalised"
        )));
    }
    Ok(lse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scipy_edge_cases() {
        assert_eq!(logsumexp("x", &[]).unwrap(), f64::NEG_INFINITY);
        assert_eq!(
            logsumexp("x", &[f64::NEG_INFINITY; 3]).unwrap(),
            f64::NEG_INFINITY
        );
        assert_eq!(logsumexp("x", &[f64::NEG_INFINITY, 2.5]).unwrap(), 2.5);
        assert!(logsumexp("x", &[1.0, f64::NAN])
            .unwrap_err()
            .to_string()
            .contains("x[1] is NaN"));
        assert!(logsumexp("x", &[f64::INFINITY])
            .unwrap_err()
            .to_string()
            .contains("+inf"));
    }

    #[test]
    fn tiny_terms_are_not_lost() {
        let got = logsumexp("x", &[0.0, -40.0]).unwrap();
        let want = (-40.0f64).exp().ln_1p();
        assert!((got - want).abs() <= 1e-15 * want);
    }

    #[test]
    fn huge_magnitudes() {
        let got = logsumexp("x", &[1e300, 1e300]).unwrap();
        assert_eq!(got, 1e300);
        let got = logsumexp("x", &[-1e300, 0.0]).unwrap();
        assert_eq!(got, 0.0);
    }

    #[test]
    fn weights_and_ess() {
        let lw = [0.0, f64::NEG_INFINITY, 3f64.ln()];
        let mut w = [0.0; 3];
        normalized_weights_into("lw", &lw, &mut w).unwrap();
        assert!((w[0] - 0.25).abs() < 1e-15 && w[1] == 0.0 && (w[2] - 0.75).abs() < 1e-15);
        let ess = effective_sample_size("lw", &lw).unwrap();
        assert!((ess - 1.0 / (0.0625 + 0.5625)).abs() < 1e-12);
        assert!(effective_sample_size("lw", &[f64::NEG_INFINITY]).is_err());
        let m = weighted_moments("lw", &lw, "f", &[1.0, 2.0, 5.0, 6.0, 3.0, 4.0], 2).unwrap();
        assert!((m[0] - 2.5).abs() < 1e-15 && (m[1] - 3.5).abs() < 1e-15);
    }
}
