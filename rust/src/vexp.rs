//! Vectorisable `exp` and the reductions built on it, with run-time CPU dispatch.
//!
//! Wheels are built for generic x86-64, so the hot loops are compiled three times (baseline,
//! AVX2+FMA, AVX-512) and the widest one the running CPU supports is picked at run time.
//! The exponential is a branch-free Cody–Waite reduction plus a degree-13 polynomial
//! (error below 2 ulp on [-708, 0], checked against `f64::exp` in the tests), so the
//! compiler can keep eight lanes busy instead of calling libm once per element.

use rayon::prelude::*;

use crate::consts::{BLOCK, LANES, LN2_HI, LN2_LO};
use crate::dispatch::dispatched;

/// Below this many elements a reduction runs on the calling thread: spawning costs more.
///
/// Measured on the project's 2-core machines (benches/, `logsumexp`, best of 15): one
/// fork-join of the rayon pool costs 30-100 µs there (the workers sleep between calls and
/// waking them is slow), so two threads only win from about 2^18 elements on (serial 250 µs,
/// parallel 190-330 µs at 2^18; 470 vs 240-360 µs at 2^19; at 2^16 and 2^17 serial was
/// faster: 53 vs 82-130 µs, 118 vs 150-190 µs). It was 2^16 before that measurement.
pub const PARALLEL_THRESHOLD: usize = 1 << 18;
/// Elements per parallel task; fixed so results do not depend on the number of threads.
pub(crate) const TASK_LEN: usize = 1 << 15;

const LOG2E: f64 = std::f64::consts::LOG2_E;
/// 1.5 * 2^52: adding it rounds to the nearest integer and leaves that integer in the low bits.
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;
/// exp(x) for x below this is under 1e-307 and treated as zero (the result is normal or 0).
pub const EXP_FLOOR: f64 = -708.0;

/// How `a * b + c` is evaluated inside a kernel.
///
/// The dispatched (AVX2+FMA, AVX-512) copies of a kernel use [`Fused`]: one instruction and
/// one rounding instead of two, which nearly halves the work of the exp polynomial. The
/// baseline copy uses [`Unfused`], since without the FMA instruction `f64::mul_add` is a
/// slow library call. Both round-trip the same polynomial, within 2 ulp of libm's `exp`, so
/// results may differ in the last bits between CPUs but never between runs on one machine.
pub trait MulAdd: Copy {
    /// `a * b + c`.
    fn mul_add(a: f64, b: f64, c: f64) -> f64;
}

/// `a * b + c` with a single rounding (the FMA instruction).
#[derive(Debug, Clone, Copy)]
pub struct Fused;

/// `a * b + c` as a multiplication and an addition.
#[derive(Debug, Clone, Copy)]
pub struct Unfused;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f64, b: f64, c: f64) -> f64 {
        a.mul_add(b, c)
    }
}

impl MulAdd for Unfused {
    #[inline(always)]
    fn mul_add(a: f64, b: f64, c: f64) -> f64 {
        a * b + c
    }
}

/// `exp(x)` for `x <= 0` (any `x < EXP_FLOOR`, `-inf` and NaN included, gives exactly 0).
///
/// Invariant: callers only pass non-positive arguments (log-scores shifted by their maximum);
/// positive arguments up to 709 are still correct, larger ones are not.
#[inline(always)]
pub fn exp_nonpos(x: f64) -> f64 {
    exp_nonpos_with::<Unfused>(x)
}

/// [`exp_nonpos`] with the multiply-adds evaluated as `M` says (see [`MulAdd`]).
#[inline(always)]
pub fn exp_nonpos_with<M: MulAdd>(x: f64) -> f64 {
    let keep = if x >= EXP_FLOOR { 1.0 } else { 0.0 };
    let x = if x >= EXP_FLOOR { x } else { EXP_FLOOR };
    let t = M::mul_add(x, LOG2E, ROUND_MAGIC);
    let k = t - ROUND_MAGIC;
    let r = M::mul_add(-k, LN2_LO, M::mul_add(-k, LN2_HI, x));
    // Taylor coefficients 1/n!; |r| <= ln2/2 so the degree-13 remainder is below 5e-18.
    let mut p = 1.0 / 6_227_020_800.0;
    p = M::mul_add(p, r, 1.0 / 479_001_600.0);
    p = M::mul_add(p, r, 1.0 / 39_916_800.0);
    p = M::mul_add(p, r, 1.0 / 3_628_800.0);
    p = M::mul_add(p, r, 1.0 / 362_880.0);
    p = M::mul_add(p, r, 1.0 / 40_320.0);
    p = M::mul_add(p, r, 1.0 / 5_040.0);
    p = M::mul_add(p, r, 1.0 / 720.0);
    p = M::mul_add(p, r, 1.0 / 120.0);
    p = M::mul_add(p, r, 1.0 / 24.0);
    p = M::mul_add(p, r, 1.0 / 6.0);
    p = M::mul_add(p, r, 0.5);
    p = M::mul_add(p, r, 1.0);
    p = M::mul_add(p, r, 1.0);
    // The low 12 bits of `t` hold k in two's complement; shifting them into the exponent
    // field and adding the bias gives 2^k for -1022 <= k <= 1023.
    let scale = f64::from_bits((t.to_bits() << 52).wrapping_add(1023u64 << 52));
    p * scale * keep
}

/// `ln(1 + u)` for `0 <= u <= 1`, branch-free so that it vectorises (a few ulp).
///
/// `ln(1 + u) = j ln 2 + 2 atanh(s)` with `s = (1 + u - 2^j) / (1 + u + 2^j)`, where `j = 1`
/// when `1 + u > sqrt 2` and 0 otherwise, so `|s| <= 3 - 2 sqrt 2 < 0.1716`; `s` is formed
/// from `u` directly (`u / (2 + u)` or `(u - 1) / (u + 3)`), not from the rounded `1 + u`.
/// The odd series `2 (s + s^3/3 + ... + s^23/23)` then has a remainder below 1e-18.
#[inline(always)]
pub fn ln_1p_unit<M: MulAdd>(u: f64) -> f64 {
    let high = u > std::f64::consts::SQRT_2 - 1.0;
    let num = if high { u - 1.0 } else { u };
    let den = if high { u + 3.0 } else { u + 2.0 };
    let s = num / den;
    let s2 = s * s;
    let mut p = 1.0 / 23.0;
    p = M::mul_add(p, s2, 1.0 / 21.0);
    p = M::mul_add(p, s2, 1.0 / 19.0);
    p = M::mul_add(p, s2, 1.0 / 17.0);
    p = M::mul_add(p, s2, 1.0 / 15.0);
    p = M::mul_add(p, s2, 1.0 / 13.0);
    p = M::mul_add(p, s2, 1.0 / 11.0);
    p = M::mul_add(p, s2, 1.0 / 9.0);
    p = M::mul_add(p, s2, 1.0 / 7.0);
    p = M::mul_add(p, s2, 1.0 / 5.0);
    p = M::mul_add(p, s2, 1.0 / 3.0);
    let two_s = 2.0 * s;
    let series = M::mul_add(two_s * s2, p, two_s);
    if high {
        std::f64::consts::LN_2 + series
    } else {
        series
    }
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
pub(crate) fn lane_sum(x: &[f64], g: impl Fn(f64) -> f64 + Copy) -> f64 {
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

/// `out_i = f(x_i, y_i)`. With [`lane_sum`] and [`lane_sum_zip`] this is how a fused pass
/// is written: per block of [`BLOCK`] elements, map the inputs into buffers that stay in the
/// L1 cache, then reduce the buffers. (A lane loop that produces several sums per element
/// from one closure defeats LLVM's vectoriser; a map with one output per element and a
/// reduction with one sum do not.)
#[inline(always)]
pub(crate) fn map2(x: &[f64], y: &[f64], out: &mut [f64], f: impl Fn(f64, f64) -> f64 + Copy) {
    for ((o, &a), &b) in out.iter_mut().zip(x).zip(y) {
        *o = f(a, b);
    }
}

/// `out_i = f(x_i, y_i, z_i)`; see [`map2`].
#[inline(always)]
pub(crate) fn map3(
    x: &[f64],
    y: &[f64],
    z: &[f64],
    out: &mut [f64],
    f: impl Fn(f64, f64, f64) -> f64 + Copy,
) {
    for (((o, &a), &b), &c) in out.iter_mut().zip(x).zip(y).zip(z) {
        *o = f(a, b, c);
    }
}

/// Σ g(x_i, y_i) over paired slices, accumulated as in [`lane_sum`].
#[inline(always)]
pub(crate) fn lane_sum_zip(x: &[f64], y: &[f64], g: impl Fn(f64, f64) -> f64 + Copy) -> f64 {
    let mut total = (0.0, 0.0);
    for (bx, by) in x.chunks(BLOCK).zip(y.chunks(BLOCK)) {
        let mut lanes = [0.0f64; LANES];
        let mut cx = bx.chunks_exact(LANES);
        let mut cy = by.chunks_exact(LANES);
        for (a, b) in (&mut cx).zip(&mut cy) {
            for j in 0..LANES {
                lanes[j] += g(a[j], b[j]);
            }
        }
        let mut block_sum: f64 = cx
            .remainder()
            .iter()
            .zip(cy.remainder())
            .map(|(&a, &b)| g(a, b))
            .sum();
        for lane in lanes {
            block_sum += lane;
        }
        neumaier_add(&mut total, block_sum);
    }
    total.0 + total.1
}

/// `Σ term(a_i, b_i, c_i)` over one block (at most [`BLOCK`] elements) of three slices, in
/// [`LANES`] lanes: the loop body vectorises, and for one block the naive lane sums lose
/// nothing that the callers' compensated block totals would keep.
#[inline(always)]
pub(crate) fn lane_sum3(
    a: &[f64],
    b: &[f64],
    c: &[f64],
    term: impl Fn(f64, f64, f64) -> f64,
) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let (mut ca, mut cb, mut cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    for ((x, y), z) in (&mut ca).zip(&mut cb).zip(&mut cc) {
        for j in 0..LANES {
            lanes[j] += term(x[j], y[j], z[j]);
        }
    }
    let mut total: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .zip(cc.remainder())
        .map(|((&x, &y), &z)| term(x, y, z))
        .sum();
    for lane in lanes {
        total += lane;
    }
    total
}

/// Runs `f` on `0..n` on the calling thread, or, from [`PARALLEL_THRESHOLD`] elements on, on
/// fixed ranges of [`TASK_LEN`] in parallel, adding the `R` partial sums of the ranges in
/// order with compensation: the result does not depend on the number of threads.
pub(crate) fn sum_ranges<const R: usize>(
    n: usize,
    f: impl Fn(std::ops::Range<usize>) -> [f64; R] + Sync + Send,
) -> [f64; R] {
    if n < PARALLEL_THRESHOLD {
        return f(0..n);
    }
    let partials: Vec<[f64; R]> = (0..n.div_ceil(TASK_LEN))
        .into_par_iter()
        .map(|t| f(t * TASK_LEN..((t + 1) * TASK_LEN).min(n)))
        .collect();
    std::array::from_fn(|r| compensated_sum(partials.iter().map(|p| p[r])))
}

/// Lane-wise maximum and a flag for NaN / +inf, in one pass.
#[inline(always)]
pub(crate) fn lane_max(x: &[f64]) -> (f64, bool) {
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
pub(crate) fn lane_exp_into<M: MulAdd>(x: &[f64], shift: f64, out: &mut [f64]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = exp_nonpos_with::<M>(v - shift);
    }
}

/// `out_i = exp(x_i - shift)` and their sum, accumulated as in [`lane_sum`] (same value as
/// [`sum_exp`] on the same range).
#[inline(always)]
fn lane_exp_into_sum<M: MulAdd>(x: &[f64], shift: f64, out: &mut [f64]) -> f64 {
    let mut total = (0.0, 0.0);
    for (bx, bo) in x.chunks(BLOCK).zip(out.chunks_mut(BLOCK)) {
        let mut lanes = [0.0f64; LANES];
        let mut cx = bx.chunks_exact(LANES);
        let mut co = bo.chunks_exact_mut(LANES);
        for (a, o) in (&mut cx).zip(&mut co) {
            for j in 0..LANES {
                let e = exp_nonpos_with::<M>(a[j] - shift);
                o[j] = e;
                lanes[j] += e;
            }
        }
        let mut block_sum = 0.0;
        for (&a, o) in cx.remainder().iter().zip(co.into_remainder()) {
            *o = exp_nonpos_with::<M>(a - shift);
            block_sum += *o;
        }
        for lane in lanes {
            block_sum += lane;
        }
        neumaier_add(&mut total, block_sum);
    }
    total.0 + total.1
}

dispatched! {
    /// Σ exp(x_i - shift) on the calling thread.
    pub fn sum_exp_serial(x: &[f64], shift: f64) -> f64 => [M] lane_sum(x, |v| exp_nonpos_with::<M>(v - shift))
}
dispatched! {
    /// (Σ e_i, Σ e_i²) with e_i = exp(x_i - shift), on the calling thread.
    pub(crate) fn sum_exp_and_sq_serial(x: &[f64], shift: f64) -> [f64; 2] => [M] {
        let mut e = [0.0f64; BLOCK];
        let mut total = [(0.0, 0.0); 2];
        for block in x.chunks(BLOCK) {
            let e = &mut e[..block.len()];
            lane_exp_into::<M>(block, shift, e);
            neumaier_add(&mut total[0], lane_sum(e, |v| v));
            neumaier_add(&mut total[1], lane_sum(e, |v| v * v));
        }
        total.map(|(s, c)| s + c)
    }
}
dispatched! {
    /// (max, saw NaN or +inf) on the calling thread.
    pub fn max_serial(x: &[f64]) -> (f64, bool) => [M] lane_max(x)
}
dispatched! {
    /// out_i = exp(x_i - shift) on the calling thread.
    pub fn exp_into_serial(x: &[f64], shift: f64, out: &mut [f64]) -> () => [M] lane_exp_into::<M>(x, shift, out)
}
dispatched! {
    /// out_i = exp(x_i - shift) and Σ out_i, on the calling thread.
    pub(crate) fn exp_into_sum_serial(x: &[f64], shift: f64, out: &mut [f64]) -> f64 => [M] lane_exp_into_sum::<M>(x, shift, out)
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

/// `(Σ e_i, Σ e_i²)` with `e_i = exp(x_i - shift)`, in one pass; compensated, parallel for
/// long inputs. With `shift = max x` this gives the effective sample size `(Σe)² / Σe²`.
pub fn sum_exp_and_sq(x: &[f64], shift: f64) -> (f64, f64) {
    let [s, s2] = sum_ranges(x.len(), |r| sum_exp_and_sq_serial(&x[r], shift));
    (s, s2)
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

/// `out_i = exp(x_i - shift)` and `Σ out_i` (the value [`sum_exp`] gives), in one pass;
/// parallel for long inputs.
pub fn exp_into_sum(x: &[f64], shift: f64, out: &mut [f64]) -> f64 {
    debug_assert_eq!(x.len(), out.len());
    if x.len() < PARALLEL_THRESHOLD {
        return exp_into_sum_serial(x, shift, out);
    }
    let partials: Vec<f64> = out
        .par_chunks_mut(TASK_LEN)
        .zip(x.par_chunks(TASK_LEN))
        .map(|(o, c)| exp_into_sum_serial(c, shift, o))
        .collect();
    compensated_sum(partials)
}

/// `out_i *= factor`, parallel for long inputs.
pub fn scale(out: &mut [f64], factor: f64) {
    if out.len() < PARALLEL_THRESHOLD {
        for v in out.iter_mut() {
            *v *= factor;
        }
        return;
    }
    out.par_chunks_mut(TASK_LEN)
        .for_each(|o| o.iter_mut().for_each(|v| *v *= factor));
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
    fn fused_exp_matches_libm_within_two_ulp() {
        let mut x = -708.0;
        while x <= 0.0 {
            let (ours, libm) = (exp_nonpos_with::<Fused>(x), x.exp());
            assert!(ulp_distance(ours, libm) <= 2, "x={x}: {ours} vs {libm}");
            x += 0.012_345_6;
        }
        assert_eq!(exp_nonpos_with::<Fused>(0.0), 1.0);
        assert_eq!(exp_nonpos_with::<Fused>(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpos_with::<Fused>(f64::NAN), 0.0);
    }

    #[test]
    fn ln_1p_unit_matches_libm() {
        let mut worst = 0;
        for i in 0..=200_000u32 {
            let u = f64::from(i) / 200_000.0;
            for v in [u, u * 1e-3, u * 1e-9, u * 1e-300] {
                for (ours, libm) in [
                    (ln_1p_unit::<Unfused>(v), v.ln_1p()),
                    (ln_1p_unit::<Fused>(v), v.ln_1p()),
                ] {
                    worst = worst.max(ulp_distance(ours, libm));
                }
            }
        }
        assert!(worst <= 3, "worst error {worst} ulp");
        assert_eq!(ln_1p_unit::<Fused>(0.0), 0.0);
    }

    #[test]
    fn fused_sums_agree_with_naive_ones() {
        crate::dispatch::with_level(fused_sums_agree_with_naive_ones_here);
    }

    fn fused_sums_agree_with_naive_ones_here() {
        for n in [0, 1, 7, 8, 9, 513, 10_000, PARALLEL_THRESHOLD + 3, 300_001] {
            let x: Vec<f64> = (0..n).map(|i| -((i * 7919 % 1000) as f64) / 50.0).collect();
            let naive: f64 = x.iter().map(|v| v.exp()).sum();
            let naive_sq: f64 = x.iter().map(|v| (2.0 * v).exp()).sum();
            let (s, s2) = sum_exp_and_sq(&x, 0.0);
            assert!(
                (s - naive).abs() <= 1e-12 * naive.max(1.0),
                "n={n}: {s} vs {naive}"
            );
            assert!((s2 - naive_sq).abs() <= 1e-12 * naive_sq.max(1.0), "n={n}");
            let mut out = vec![0.0; n];
            let total = exp_into_sum(&x, 0.0, &mut out);
            assert_eq!(
                total,
                sum_exp(&x, 0.0),
                "n={n}: same accumulation as sum_exp"
            );
            for (o, v) in out.iter().zip(&x) {
                assert!(ulp_distance(*o, v.exp()) <= 2);
            }
            scale(&mut out, 0.5);
            assert!(out
                .iter()
                .zip(&x)
                .all(|(o, v)| ulp_distance(*o, 0.5 * v.exp()) <= 3));
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
