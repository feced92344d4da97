//! The blocked passes over one context's samples: weighted sums, first and centred second
//! moments, score ranges. Each recomputes its weights block by block, so nothing of size N is
//! stored (see `Solver::evaluate`).

use rayon::prelude::*;

use super::prepare::Prepared;
use crate::consts::BLOCK;
use crate::vexp;

/// Elements per parallel task in the sums; fixed so results do not depend on the thread count.
const TASK_LEN: usize = 1 << 15;

/// Runs `block(lo, hi, acc)` over the rows `0..len` of one context, [`BLOCK`] rows at a time,
/// accumulating into `acc` (reset first).
///
/// A pass takes all its sums over one block before moving on, so each column is read from
/// memory once per pass rather than once per sum (the K(K+1)/2 covariance sums would otherwise
/// stream the columns K times over). Long contexts are split into [`TASK_LEN`]-row tasks run in
/// parallel and merged in order; as `TASK_LEN` is a multiple of `BLOCK`, the blocks, and so the
/// result, do not depend on the number of threads.
pub(super) fn blocked_sums(
    len: usize,
    acc: &mut [(f64, f64)],
    block: impl Fn(usize, usize, &mut [(f64, f64)]) + Sync,
) {
    let serial = |lo: usize, hi: usize, acc: &mut [(f64, f64)]| {
        let mut b = lo;
        while b < hi {
            let e = (b + BLOCK).min(hi);
            block(b, e, acc);
            b = e;
        }
    };
    acc.fill((0.0, 0.0));
    if len < vexp::PARALLEL_THRESHOLD {
        serial(0, len, acc);
        return;
    }
    let n = acc.len();
    let parts: Vec<Vec<(f64, f64)>> = (0..len.div_ceil(TASK_LEN))
        .into_par_iter()
        .map(|t| {
            let mut part = vec![(0.0, 0.0); n];
            serial(t * TASK_LEN, ((t + 1) * TASK_LEN).min(len), &mut part);
            part
        })
        .collect();
    for part in parts {
        for (a, (sum, compensation)) in acc.iter_mut().zip(part) {
            vexp::neumaier_add(a, sum);
            vexp::neumaier_add(a, compensation);
        }
    }
}

pub(super) use crate::vexp::lane_sum3 as lane_sum;

/// Fills a block's weights: `fill(lo, hi, out)` writes the weights of rows `lo..hi` of one
/// context (positions relative to its start) into `out[..hi - lo]`.
pub(super) trait BlockWeights: Fn(usize, usize, &mut [f64]) + Sync {}
impl<F: Fn(usize, usize, &mut [f64]) + Sync> BlockWeights for F {}

/// For context `c` with weights from `weights`: `acc[0] = sum e`, `acc[1] = sum e^2`,
/// `acc[2 + j] = sum e x_j`, and, when `acc` has room, `acc[k + 2] = sum of the weights
/// below 1` (see [`Solver::evaluate`]) and `acc[k + 3]` the count of weights equal to 1.
pub(super) fn moment_sums(
    d: &Prepared,
    c: usize,
    weights: &impl BlockWeights,
    acc: &mut [(f64, f64)],
) {
    let start = d.span(c).start;
    let slots = if acc.len() >= d.k + 4 {
        d.k + 4
    } else {
        d.k + 2
    };
    blocked_sums(d.span(c).len(), &mut acc[..slots], |lo, hi, acc| {
        let mut buf = [0.0; BLOCK];
        let w = &mut buf[..hi - lo];
        weights(lo, hi, w);
        let w = &*w;
        vexp::neumaier_add(&mut acc[0], lane_sum(w, w, w, |v, _, _| v));
        vexp::neumaier_add(&mut acc[1], lane_sum(w, w, w, |v, _, _| v * v));
        for j in 0..d.k {
            let x = &d.cols[j * d.m + start + lo..j * d.m + start + hi];
            vexp::neumaier_add(&mut acc[2 + j], lane_sum(w, x, x, |v, a, _| v * a));
        }
        if slots == d.k + 4 {
            let below = lane_sum(w, w, w, |v, _, _| if v < 1.0 { v } else { 0.0 });
            let ones = lane_sum(w, w, w, |v, _, _| if v < 1.0 { 0.0 } else { 1.0 });
            vexp::neumaier_add(&mut acc[d.k + 2], below);
            vexp::neumaier_add(&mut acc[d.k + 3], ones);
        }
    });
}

/// For context `c` with weights from `weights` and weighted means `means`: the centred cross
/// sums `sum e (x_a - means_a) (x_b - means_b)` for `b <= a`, packed row by row into `acc`.
///
/// `inv_units` (powers of two, or ones) divide each centred column first, so that features of
/// any magnitude (1e±200) give products that neither overflow nor underflow.
pub(super) fn covariance_sums(
    d: &Prepared,
    c: usize,
    weights: &impl BlockWeights,
    means: &[f64],
    inv_units: &[f64],
    acc: &mut [(f64, f64)],
) {
    let start = d.span(c).start;
    let col = |j: usize, lo: usize, hi: usize| &d.cols[j * d.m + start + lo..j * d.m + start + hi];
    blocked_sums(
        d.span(c).len(),
        &mut acc[..d.k * (d.k + 1) / 2],
        |lo, hi, acc| {
            let mut buf = [0.0; BLOCK];
            let w = &mut buf[..hi - lo];
            weights(lo, hi, w);
            let w = &*w;
            let mut slot = 0;
            for (a, (&ma, &ia)) in means.iter().zip(inv_units).enumerate() {
                let xa = col(a, lo, hi);
                for (b, (&mb, &ib)) in means[..=a].iter().zip(inv_units).enumerate() {
                    let xb = col(b, lo, hi);
                    let sum = lane_sum(w, xa, xb, |v, p, q| v * ((p - ma) * ia) * ((q - mb) * ib));
                    vexp::neumaier_add(&mut acc[slot], sum);
                    slot += 1;
                }
            }
        },
    );
}

/// Writes the scores `base_i + sum_j coef_j x_ij` of rows `lo..hi` of context `c` (relative to
/// its start) into `out[..hi - lo]`; `base` is the log-weights, or zero.
pub(super) fn scores_into(
    d: &Prepared,
    c: usize,
    coef: &[f64],
    with_log_weights: bool,
    lo: usize,
    hi: usize,
    out: &mut [f64],
) {
    let (lo, hi) = (d.span(c).start + lo, d.span(c).start + hi);
    let out = &mut out[..hi - lo];
    if with_log_weights && !d.lw.is_empty() {
        out.copy_from_slice(&d.lw[lo..hi]);
    } else {
        out.fill(0.0);
    }
    for (j, &l) in coef.iter().enumerate() {
        for (o, &x) in out.iter_mut().zip(&d.cols[j * d.m + lo..j * d.m + hi]) {
            *o += l * x;
        }
    }
}

/// `(min, max)` of the scores of context `c` (see [`scores_into`]; the min only when
/// `want_min`, else `+inf`) and whether any is not finite; computed block by block, nothing of
/// size N is stored.
pub(super) fn score_range(
    d: &Prepared,
    c: usize,
    coef: &[f64],
    with_log_weights: bool,
    want_min: bool,
) -> (f64, f64, bool) {
    let len = d.span(c).len();
    let task = |t0: usize, t1: usize| {
        let mut buf = [0.0; BLOCK];
        let (mut lo_v, mut hi_v, mut bad) = (f64::INFINITY, f64::NEG_INFINITY, false);
        let mut b = t0;
        while b < t1 {
            let e = (b + BLOCK).min(t1);
            scores_into(d, c, coef, with_log_weights, b, e, &mut buf);
            let (m, flag) = vexp::max_and_flag(&buf[..e - b]);
            hi_v = hi_v.max(m);
            bad |= flag || !m.is_finite();
            if want_min {
                lo_v = buf[..e - b].iter().fold(lo_v, |a, &v| a.min(v));
            }
            b = e;
        }
        (lo_v, hi_v, bad)
    };
    let merge = |a: (f64, f64, bool), b: (f64, f64, bool)| (a.0.min(b.0), a.1.max(b.1), a.2 | b.2);
    if len < vexp::PARALLEL_THRESHOLD {
        return task(0, len);
    }
    (0..len.div_ceil(TASK_LEN))
        .into_par_iter()
        .map(|t| task(t * TASK_LEN, ((t + 1) * TASK_LEN).min(len)))
        .reduce(|| (f64::INFINITY, f64::NEG_INFINITY, false), merge)
}

/// `log sum_i e^{s_i}` from the sums of `e^{s_i - max}` split as in
/// `logspace::logsumexp_with_max`: the terms equal to 1 (at the maximum) are counted, the rest
/// summed on their own, so that tiny contributions keep their relative precision.
pub(super) fn log_sum_from_parts(max: f64, below: f64, ones: f64) -> f64 {
    max + ((ones - 1.0) + below).ln_1p()
}
