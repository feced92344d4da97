//! Log-space reductions: log-sum-exp, normalised importance weights, effective sample size and
//! self-normalised moments (DESIGN §3). Edge cases follow `scipy.special.logsumexp`: an empty
//! input or one that is all `-inf` sums to `-inf`; `-inf` entries are exact zeros.

use crate::error::{check_finite_matrix, check_log_scores, invalid, Result};
use rayon::prelude::*;

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
    if x.len() < vexp::PARALLEL_THRESHOLD {
        let m = checked_max(arg, x)?;
        return Ok(logsumexp_with_max(x, m));
    }
    // One parallel region instead of two (maximum, then sum): each chunk finds its own
    // maximum m_c and sums exp(x_i - m_c) while it is still in cache; the chunk sums are then
    // rescaled by exp(m_c - m) and added with compensation (the order is fixed).
    let parts: Vec<(f64, bool, f64)> = x
        .par_chunks(vexp::TASK_LEN)
        .map(|c| {
            let (mc, bad) = vexp::max_serial(c);
            let sum = if bad || mc == f64::NEG_INFINITY {
                0.0
            } else {
                vexp::sum_exp_serial(c, mc)
            };
            (mc, bad, sum)
        })
        .collect();
    if parts.iter().any(|p| p.1) {
        check_log_scores(arg, x)?;
    }
    let m = parts
        .iter()
        .fold(f64::NEG_INFINITY, |a, p| if p.0 > a { p.0 } else { a });
    if m == f64::NEG_INFINITY {
        return Ok(f64::NEG_INFINITY);
    }
    let total = vexp::compensated_sum(
        parts
            .iter()
            .filter(|p| p.0 > f64::NEG_INFINITY)
            .map(|&(mc, _, sum)| sum * (mc - m).exp()),
    );
    Ok(lse_from_total(x, m, total))
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

/// Normalised weights `w_i = exp(l_i - logsumexp(l))`, written into `out`; returns the
/// `logsumexp`.
///
/// Two passes after the maximum `m`: `out_i = e_i = exp(l_i - m)` while summing
/// `S = Σ e_i`, then `out_i *= 1 / S`. This is one exponential per element instead of two,
/// and each weight carries one rounding less than `exp(l_i - lse)`, whose argument is
/// rounded at the magnitude of `lse`.
pub fn normalized_weights_into(arg: &str, log_w: &[f64], out: &mut [f64]) -> Result<f64> {
    let m = normalizer_max(arg, log_w)?;
    let total = vexp::exp_into_sum(log_w, m, out);
    vexp::scale(out, 1.0 / total);
    Ok(lse_from_total(log_w, m, total))
}

/// Effective sample size `1 / Σ w_i²` of normalised weights, as `(Σ e_i)² / Σ e_i²` with
/// `e_i = exp(l_i - max l)`: both sums in one pass, one exponential per element.
pub fn effective_sample_size(arg: &str, log_w: &[f64]) -> Result<f64> {
    let m = normalizer_max(arg, log_w)?;
    let (s, s2) = vexp::sum_exp_and_sq(log_w, m);
    Ok(s * s / s2)
}

/// Self-normalised moments `Σ_i w_i f_ik` for a row-major `n x k` feature matrix.
///
/// One pass over the features after the maximum `m` of the log-weights: with
/// `e_i = exp(l_i - m)` it sums `S = Σ e_i` and `Σ e_i f_ik` (lanes within blocks, blocks
/// with compensation) and returns `Σ e_i f_ik / S`. The finiteness of the features is
/// checked in the same pass; the message naming the first bad entry is only built on failure.
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
    let (m, bad_weights) = vexp::max_and_flag(log_w);
    if n == 0 || bad_weights || m == f64::NEG_INFINITY || k == 0 {
        // Error paths (and the degenerate k = 0): the checks in their documented order.
        check_finite_matrix(features_arg, features, k)?;
        normalizer_max(weights_arg, log_w)?;
        return Ok(Vec::new());
    }
    let sums = moment_sums(log_w, m, features, k);
    if sums[k + 1] != 0.0 {
        check_finite_matrix(features_arg, features, k)?;
    }
    let total = sums[k];
    Ok(sums[..k]
        .iter()
        .enumerate()
        .map(|(j, s)| {
            if s.is_finite() {
                s / total
            } else {
                // Σ e f overflowed (features near the largest float): the moment itself, a
                // convex combination of finite values, is finite.
                scaled_moment(log_w, m, features, k, j, total)
            }
        })
        .collect())
}

/// The moment of feature `j` with its values scaled by a power of two below their largest
/// magnitude first (the slow path of [`weighted_moments`] when `Σ e_i f_ij` overflows).
fn scaled_moment(log_w: &[f64], m: f64, features: &[f64], k: usize, j: usize, total: f64) -> f64 {
    let column = || features.iter().skip(j).step_by(k);
    let largest = column().fold(0.0f64, |a, v| a.max(v.abs()));
    // An exact power of two: scaling by it and back changes no mantissa.
    let unit = f64::from_bits(largest.to_bits() & (0x7ffu64 << 52));
    let sum = vexp::compensated_sum(
        log_w
            .iter()
            .zip(column())
            .map(|(&l, &f)| vexp::exp_nonpos(l - m) * (f / unit)),
    );
    (sum / total * unit).clamp(-largest, largest)
}

/// `[Σ e_i f_i0, ..., Σ e_i f_i(k-1), Σ e_i, #non-finite features]` with `e_i = exp(l_i - m)`.
fn moment_sums(log_w: &[f64], m: f64, features: &[f64], k: usize) -> Vec<f64> {
    let n = log_w.len();
    let run = |r: std::ops::Range<usize>| {
        moment_sums_serial(&log_w[r.clone()], m, &features[r.start * k..r.end * k], k)
    };
    if n < vexp::PARALLEL_THRESHOLD {
        return run(0..n);
    }
    let tasks = n.div_ceil(MOMENT_TASK_ROWS);
    let partials: Vec<Vec<f64>> = (0..tasks)
        .into_par_iter()
        .map(|t| run(t * MOMENT_TASK_ROWS..((t + 1) * MOMENT_TASK_ROWS).min(n)))
        .collect();
    (0..k + 2)
        .map(|c| vexp::compensated_sum(partials.iter().map(|p| p[c])))
        .collect()
}

/// Rows per parallel task of [`moment_sums`]; fixed so results do not depend on the threads.
const MOMENT_TASK_ROWS: usize = 1 << 14;
/// Rows whose weights are exponentiated together into a stack buffer.
const MOMENT_BLOCK: usize = 256;

crate::dispatch::dispatched! {
    /// [`moment_sums`] on the calling thread.
    fn moment_sums_serial(log_w: &[f64], m: f64, features: &[f64], k: usize) -> Vec<f64> => [M] {
        match k {
            1 => moment_rows::<M, 1>(log_w, m, features),
            2 => moment_rows::<M, 2>(log_w, m, features),
            3 => moment_rows::<M, 3>(log_w, m, features),
            4 => moment_rows::<M, 4>(log_w, m, features),
            _ => moment_rows_any::<M>(log_w, m, features, k),
        }
    }
}

/// [`moment_sums`] for a number of features known at compile time: per block of rows, the
/// weights are exponentiated into a buffer, then each row adds `e_i f_i` to one of eight
/// independent accumulators (so the additions do not wait on each other).
#[inline(always)]
fn moment_rows<M: vexp::MulAdd, const K: usize>(
    log_w: &[f64],
    m: f64,
    features: &[f64],
) -> Vec<f64> {
    const LANES: usize = 8;
    let mut total = [(0.0, 0.0); K];
    let mut weight_total = (0.0, 0.0);
    let mut bad = 0.0;
    let mut e = [0.0f64; MOMENT_BLOCK];
    for (lw, f) in log_w
        .chunks(MOMENT_BLOCK)
        .zip(features.chunks(MOMENT_BLOCK * K))
    {
        let e = &mut e[..lw.len()];
        vexp::lane_exp_into::<M>(lw, m, e);
        let block_weight = vexp::lane_sum(e, |v| v);
        bad += vexp::lane_sum(f, |v| if v.is_finite() { 0.0 } else { 1.0 });
        let mut acc = [[0.0f64; K]; LANES];
        let mut rows = f.chunks_exact(K * LANES);
        let mut weights = e.chunks_exact(LANES);
        for (rows8, e8) in (&mut rows).zip(&mut weights) {
            for j in 0..LANES {
                for c in 0..K {
                    let v = rows8[j * K + c];
                    acc[j][c] = M::mul_add(e8[j], v, acc[j][c]);
                }
            }
        }
        let mut block = [0.0f64; K];
        for (row, &ei) in rows.remainder().chunks_exact(K).zip(weights.remainder()) {
            for c in 0..K {
                block[c] = M::mul_add(ei, row[c], block[c]);
            }
        }
        for lane in acc {
            for c in 0..K {
                block[c] += lane[c];
            }
        }
        for c in 0..K {
            vexp::neumaier_add(&mut total[c], block[c]);
        }
        vexp::neumaier_add(&mut weight_total, block_weight);
    }
    let mut out: Vec<f64> = total.iter().map(|(s, c)| s + c).collect();
    out.push(weight_total.0 + weight_total.1);
    out.push(bad);
    out
}

/// [`moment_rows`] for any number of features.
#[inline(always)]
fn moment_rows_any<M: vexp::MulAdd>(log_w: &[f64], m: f64, features: &[f64], k: usize) -> Vec<f64> {
    let mut total = vec![(0.0, 0.0); k];
    let mut weight_total = (0.0, 0.0);
    let mut bad = 0.0;
    let mut e = [0.0f64; MOMENT_BLOCK];
    let mut block = vec![0.0f64; k];
    for (lw, f) in log_w
        .chunks(MOMENT_BLOCK)
        .zip(features.chunks(MOMENT_BLOCK * k))
    {
        let e = &mut e[..lw.len()];
        vexp::lane_exp_into::<M>(lw, m, e);
        let block_weight = vexp::lane_sum(e, |v| v);
        bad += vexp::lane_sum(f, |v| if v.is_finite() { 0.0 } else { 1.0 });
        block.fill(0.0);
        for (row, &ei) in f.chunks_exact(k).zip(e.iter()) {
            for (b, &v) in block.iter_mut().zip(row) {
                *b = M::mul_add(ei, v, *b);
            }
        }
        for (t, &b) in total.iter_mut().zip(&block) {
            vexp::neumaier_add(t, b);
        }
        vexp::neumaier_add(&mut weight_total, block_weight);
    }
    let mut out: Vec<f64> = total.iter().map(|(s, c)| s + c).collect();
    out.push(weight_total.0 + weight_total.1);
    out.push(bad);
    out
}

/// `logsumexp` from the maximum `m` and `total = Σ exp(x_i - m)`, as [`logsumexp_with_max`]
/// would compute it (its `log1p` refinement included).
fn lse_from_total(x: &[f64], m: f64, total: f64) -> f64 {
    if total >= 2.0 {
        m + total.ln()
    } else {
        logsumexp_with_max(x, m)
    }
}

/// The maximum of non-empty weights that are not all zero, as needed to normalise them.
fn normalizer_max(arg: &str, log_w: &[f64]) -> Result<f64> {
    if log_w.is_empty() {
        return Err(invalid(format!(
            "{arg} is empty: at least one weight is needed"
        )));
    }
    let m = checked_max(arg, log_w)?;
    if m == f64::NEG_INFINITY {
        return Err(invalid(format!(
            "every entry of {arg} is -inf: weights that are all zero cannot be normalised"
        )));
    }
    Ok(m)
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
    fn long_inputs_take_one_parallel_region() {
        let n = vexp::PARALLEL_THRESHOLD * 3 + 11;
        let mut x: Vec<f64> = (0..n).map(|i| -((i * 7919 % 1000) as f64) / 10.0).collect();
        for v in &mut x[..vexp::TASK_LEN * 2] {
            *v = f64::NEG_INFINITY; // whole chunks of zeros
        }
        x[n - 5] = 30.0; // the maximum sits in the last chunk
        let m = 30.0;
        let want = m + vexp::sum_exp_serial(&x, m).ln();
        let got = logsumexp("x", &x).unwrap();
        assert!((got - want).abs() <= 1e-14 * want.abs(), "{got} vs {want}");
        x[n - 1] = f64::NAN;
        let msg = logsumexp("x", &x).unwrap_err().to_string();
        assert!(msg.contains(&format!("x[{}] is NaN", n - 1)), "{msg}");
        let zeros = vec![f64::NEG_INFINITY; n];
        assert_eq!(logsumexp("x", &zeros).unwrap(), f64::NEG_INFINITY);
        // Dominated by one term: the log1p refinement still applies.
        let mut one = vec![-60.0; n];
        one[7] = 0.0;
        let want = ((n - 1) as f64 * (-60.0f64).exp()).ln_1p();
        assert!((logsumexp("x", &one).unwrap() - want).abs() <= 1e-15 * want);
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
    fn fused_moments_match_naive_weights_for_any_width() {
        crate::dispatch::with_level(fused_moments_match_here);
    }

    fn fused_moments_match_here() {
        for n in [1, 9, 300, 2_000, vexp::PARALLEL_THRESHOLD + 5] {
            for k in 1..=6 {
                let lw: Vec<f64> = (0..n)
                    .map(|i| {
                        if i % 97 == 3 {
                            f64::NEG_INFINITY
                        } else {
                            -((i * 7919 % 1000) as f64) / 40.0
                        }
                    })
                    .collect();
                let f: Vec<f64> = (0..n * k).map(|i| ((i * 31 % 17) as f64) - 8.0).collect();
                let lse = logsumexp("lw", &lw).unwrap();
                let w: Vec<f64> = lw.iter().map(|v| (v - lse).exp()).collect();
                let got = weighted_moments("lw", &lw, "f", &f, k).unwrap();
                for c in 0..k {
                    let want: f64 = (0..n).map(|i| w[i] * f[i * k + c]).sum();
                    assert!((got[c] - want).abs() <= 1e-12 * 8.0, "n={n} k={k} c={c}");
                }
                let mut bad = f.clone();
                bad[n * k - 1] = f64::INFINITY;
                let msg = weighted_moments("lw", &lw, "f", &bad, k)
                    .unwrap_err()
                    .to_string();
                assert!(
                    msg.contains(&format!("f[{}, {}] is +inf", n - 1, k - 1)),
                    "{msg}"
                );
            }
        }
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
