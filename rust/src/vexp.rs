//! Vectorisable `exp` and the reductions built on it, with run-time CPU dispatch.
//!
//! Wheels are built for generic x86-64, so the hot loops are compiled three times (baseline,
//! AVX2+FMA, AVX-512) and the widest one the running CPU supports is picked at run time.
//! The exponential is a branch-free Cody–Waite reduction plus a degree-13 polynomial
//! (error below 2 ulp on [-708, 0], checked against `f64::exp` in the tests), so the
//! compiler can keep eight lanes busy instead of calling libm once per element.

use rayon::prelude::*;

/// Below this many elements a reduction runs on the calling thread: spawning costs more.
pub const PARALLEL_THRESHOLD: usize = 1 << 16;
/// Elements per parallel task; fixed so results do not depend on the number of threads.
const TASK_LEN: usize = 1 << 15;
/// Lanes of the manual unrolling; eight f64 fill one AVX-512 register.
const LANES: usize = 8;
/// Elements summed naively per lane before the block total is added with compensation.
const BLOCK: usize = 512;

const LOG2E: f64 = std::f64::consts::LOG2_E;
/// ln 2 split so that `k * LN2_HI` is exact for |k| < 2^11 (Cody–Waite).
const LN2_HI: f64 = 6.931_471_803_691_238e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
/// 1.5 * 2^52: adding it rounds to the nearest integer and leaves that integer in the low bits.
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;
/// exp(x) for x below this is under 1e-307 and treated as zero (the result is normal or 0).
pub const EXP_FLOOR: f64 = -708.0;

/// `exp(x)` for `x <= 0` (any `x < EXP_FLOOR`, `-inf` included, gives exactly 0).
///
/// Invariant: callers only pass non-positive arguments (log-scores shifted by their maximum);
/// positive arguments up to 709 are still correct, larger ones are not.
#[inline(always)]
pub fn exp_nonpos(x: f64) -> f64 {
    let keep = if x >= EXP_FLOOR { 1.0 } else { 0.0 };
    let x = if x >= EXP_FLOOR { x } else { EXP_FLOOR };
    let t = x * LOG2E + ROUND_MAGIC;
    let k = t - ROUND_MAGIC;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Taylor coefficients 1/n!; |r| <= ln2/2 so the degree-13 remainder is below 5e-18.
    let mut p = 1.0 / 6_227_020_800.0;
    p = p * r + 1.0 / 479_001_600.0;
    p = p * r + 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // The low 12 bits of `t` hold k in two's complement; shifting them into the exponent
    // field and adding the bias gives 2^k for -1022 <= k <= 1023.
    let scale = f64::from_bits((t.to_bits() << 52).wrapping_add(1023u64 << 52));
    p * scale * keep
}

/// Adds `value` to a Neumaier-compensated running sum `(sum, compensation)`.
#[inline(always)]
pub fn neumaier_add(acc: &mut (f64, f64), value: f64) {
    let t = acc.0 + value;
    if acc.0.abs() >= value.abs() {
        acc.1 += (acc.0 - t) + value;
    } else {
        acc.1 += (value - t) + acc.0;
    }
    acc.0 = t;
}

/// Sums a sequence of partial totals with compensation (the order is fixed, so the result is).
pub fn compensated_sum(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut acc = (0.0, 0.0);
    for v in values {
        neumaier_add(&mut acc, v);
    }
    acc.0 + acc.1
}

/// Σ g(x_i) over one slice: lanes of naive sums inside blocks, blocks added with compensation.
#[inline(always)]
fn lane_sum(x: &[f64], g: impl Fn(f64) -> f64 + Copy) -> f64 {
    let mut total = (0.0, 0.0);
    for block in x.chunks(BLOCK) {
        let mut lanes = [0.0f64; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for c in &mut chunks {
            for j in 0..LANES {
                lanes[j] += g(c[j]);
            }
        }
        let mut block_sum: f64 = chunks.remainder().iter().map(|&v| g(v)).sum();
        for lane in lanes {
            block_sum += lane;
        }
        neumaier_add(&mut total, block_sum);
    }
    total.0 + total.1
}

/// Σ exp(x_i - shift) · y_i over paired slices, same accumulation scheme as [`lane_sum`].
#[inline(always)]
fn lane_dot(x: &[f64], y: &[f64], shift: f64) -> f64 {
    let mut total = (0.0, 0.0);
    for (bx, by) in x.chunks(BLOCK).zip(y.chunks(BLOCK)) {
        let mut lanes = [0.0f64; LANES];
        let mut cx = bx.chunks_exact(LANES);
        let mut cy = by.chunks_exact(LANES);
        for (a, b) in (&mut cx).zip(&mut cy) {
            for j in 0..LANES {
                lanes[j] += exp_nonpos(a[j] - shift) * b[j];
            }
        }
        let mut block_sum: f64 = cx
            .remainder()
            .iter()
            .zip(cy.remainder())
            .map(|(&a, &b)| exp_nonpos(a - shift) * b)
            .sum();
        for lane in lanes {
            block_sum += lane;
        }
        neumaier_add(&mut total, block_sum);
    }
    total.0 + total.1
}

/// Lane-wise maximum and a flag for NaN / +inf, in one pass.
#[inline(always)]
fn lane_max(x: &[f64]) -> (f64, bool) {
    let mut lanes = [f64::NEG_INFINITY; LANES];
    let mut bad = [false; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            lanes[j] = if c[j] > lanes[j] { c[j] } else { lanes[j] };
            bad[j] |= !(c[j] < f64::INFINITY);
        }
    }
    let mut m = f64::NEG_INFINITY;
    let mut any_bad = false;
    for &v in chunks.remainder() {
        m = if v > m { v } else { m };
        any_bad |= !(v < f64::INFINITY);
    }
    for j in 0..LANES {
        m = if lanes[j] > m { lanes[j] } else { m };
        any_bad |= bad[j];
    }
    (m, any_bad)
}

/// `out_i = exp(x_i - shift)`.
#[inline(always)]
fn lane_exp_into(x: &[f64], shift: f64, out: &mut [f64]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = exp_nonpos(v - shift);
    }
}

macro_rules! dispatched {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty => $body:expr) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
                unsafe fn wide($($arg: $ty),*) -> $ret { $body }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn mid($($arg: $ty),*) -> $ret { $body }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                {
                    // SAFETY: the CPU was just checked to support every enabled feature.
                    return unsafe { wide($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { mid($($arg),*) };
                }
            }
            $body
        }
    };
}

dispatched! {
    /// Σ exp(x_i - shift) on the calling thread.
    fn sum_exp_serial(x: &[f64], shift: f64) -> f64 => lane_sum(x, |v| exp_nonpos(v - shift))
}
dispatched! {
    /// Σ exp(x_i - shift) · y_i on the calling thread.
    fn dot_exp_serial(x: &[f64], y: &[f64], shift: f64) -> f64 => lane_dot(x, y, shift)
}
dispatched! {
    /// Σ exp(2 (x_i - shift)) on the calling thread.
    fn sum_exp_sq_serial(x: &[f64], shift: f64) -> f64 => lane_sum(x, |v| exp_nonpos(2.0 * (v - shift)))
}
dispatched! {
    /// (max, saw NaN or +inf) on the calling thread.
    fn max_serial(x: &[f64]) -> (f64, bool) => lane_max(x)
}
dispatched! {
    /// out_i = exp(x_i - shift) on the calling thread.
    fn exp_into_serial(x: &[f64], shift: f64, out: &mut [f64]) -> () => lane_exp_into(x, shift, out)
}

/// Σ exp(x_i - shift), compensated; parallel for long inputs, deterministic in any case.
pub fn sum_exp(x: &[f64], shift: f64) -> f64 {
    if x.len() < PARALLEL_THRESHOLD {
        return sum_exp_serial(x, shift);
    }
    let partials: Vec<f64> = x
        .par_chunks(TASK_LEN)
        .map(|c| sum_exp_serial(c, shift))
        .collect();
    compensated_sum(partials)
}

/// Σ exp(2 (x_i - shift)), compensated; parallel for long inputs.
pub fn sum_exp_sq(x: &[f64], shift: f64) -> f64 {
    if x.len() < PARALLEL_THRESHOLD {
        return sum_exp_sq_serial(x, shift);
    }
    let partials: Vec<f64> = x
        .par_chunks(TASK_LEN)
        .map(|c| sum_exp_sq_serial(c, shift))
        .collect();
    compensated_sum(partials)
}

/// Σ exp(x_i - shift) · y_i, compensated; parallel for long inputs.
pub fn dot_exp(x: &[f64], y: &[f64], shift: f64) -> f64 {
    debug_assert_eq!(x.len(), y.len());
    if x.len() < PARALLEL_THRESHOLD {
        return dot_exp_serial(x, y, shift);
    }
    let partials: Vec<f64> = x
        .par_chunks(TASK_LEN)
        .zip(y.par_chunks(TASK_LEN))
        .map(|(a, b)| dot_exp_serial(a, b, shift))
        .collect();
    compensated_sum(partials)
}

/// Maximum of `x` (`-inf` when empty) and whether any value was NaN or +inf.
pub fn max_and_flag(x: &[f64]) -> (f64, bool) {
    if x.len() < PARALLEL_THRESHOLD {
        return max_serial(x);
    }
    x.par_chunks(TASK_LEN).map(max_serial).reduce(
        || (f64::NEG_INFINITY, false),
        |a, b| (if b.0 > a.0 { b.0 } else { a.0 }, a.1 | b.1),
    )
}

/// `out_i = exp(x_i - shift)`, parallel for long inputs.
pub fn exp_into(x: &[f64], shift: f64, out: &mut [f64]) {
    debug_assert_eq!(x.len(), out.len());
    if x.len() < PARALLEL_THRESHOLD {
        exp_into_serial(x, shift, out);
        return;
    }
    out.par_chunks_mut(TASK_LEN)
        .zip(x.par_chunks(TASK_LEN))
        .for_each(|(o, c)| exp_into_serial(c, shift, o));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulp_distance(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    #[test]
    fn exp_matches_libm_within_two_ulp() {
        let mut x = -708.0;
        while x <= 0.0 {
            let (ours, libm) = (exp_nonpos(x), x.exp());
            assert!(ulp_distance(ours, libm) <= 2, "x={x}: {ours} vs {libm}");
            x += 0.012_345_6;
        }
        for x in [0.0, -1e-300, -1e-17, -0.5, -1.0, -700.0, -708.0] {
            assert!(ulp_distance(exp_nonpos(x), x.exp()) <= 2, "x={x}");
        }
    }

    #[test]
    fn exp_underflows_to_exact_zero() {
        assert_eq!(exp_nonpos(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpos(-709.0), 0.0);
        assert_eq!(exp_nonpos(-1e308), 0.0);
    }

    #[test]
    fn sums_agree_across_lengths_and_thread_split() {
        for n in [0, 1, 7, 8, 9, 513, 10_000, PARALLEL_THRESHOLD + 3, 300_001] {
            let x: Vec<f64> = (0..n)
                .map(|i| -((i * 7919 % 1000) as f64) / 100.0)
                .collect();
            let naive: f64 = x.iter().map(|v| v.exp()).sum();
            let ours = sum_exp(&x, 0.0);
            assert!(
                (ours - naive).abs() <= 1e-12 * naive.max(1.0),
                "n={n}: {ours} vs {naive}"
            );
            let y: Vec<f64> = (0..n).map(|i| (i % 13) as f64 - 6.0).collect();
            let naive_dot: f64 = x.iter().zip(&y).map(|(a, b)| a.exp() * b).sum();
            let dot = dot_exp(&x, &y, 0.0);
            assert!((dot - naive_dot).abs() <= 1e-10 * naive.max(1.0), "n={n}");
        }
    }

    #[test]
    fn max_flags_nan_and_positive_infinity() {
        assert_eq!(max_and_flag(&[]), (f64::NEG_INFINITY, false));
        assert_eq!(max_and_flag(&[1.0, f64::NEG_INFINITY, 3.0]), (3.0, false));
        assert!(max_and_flag(&[1.0, f64::NAN]).1);
        assert!(max_and_flag(&[f64::INFINITY]).1);
        let mut long = vec![0.0; PARALLEL_THRESHOLD * 2];
        long[PARALLEL_THRESHOLD + 5] = 4.0;
        assert_eq!(max_and_flag(&long), (4.0, false));
    }
}
