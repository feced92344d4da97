//! Vectorised importance-sampling estimates of `KL(p‖pi)`, `KL(pi‖p)`, TV and JS between a
//! normalised target `p = P / Z` (known up to `Z`) and a model `pi`, from samples of a
//! proposal `q` (docs/design.md §5.1). All arithmetic is in log space; `-inf` log-scores are
//! exact zeros.
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

use super::scores::{all_zero_target, check_log_z};
use super::{Divergence, LogScores, TARGET};
use crate::error::{check_same_length, invalid, Result};
use crate::vexp;

/// Estimates one divergence from one group of samples.
///
/// A first pass over the three arrays finds the maxima of `log P - log q` and
/// `log pi - log q`, and flags in one go every input the checks would refuse (the error
/// itself, naming the first culprit, is only built when the flag is up: see
/// [`LogScores::validate`]) and, for the KLs, a sample that makes the estimate infinite.
/// A second pass sums the terms; `log Z`, when estimated, costs one more pass except for the
/// forward KL, where `KL = D / S - log(S / n)` with `S = Σ e^{w_i - m}` and
/// `D = Σ e^{w_i - m} (log P_i - log pi_i - m)` (`w = log P - log q`, `m = max w`) comes
/// out of the same pass. Inside a pass, each block of samples is mapped into small buffers
/// that stay in the L1 cache and then reduced (see `vexp::map2`), so the work vectorises.
pub fn estimate(kind: Divergence, s: &LogScores<'_>, log_z: Option<f64>) -> Result<f64> {
    s.check_shape()?;
    let flag = match kind {
        Divergence::ForwardKl => InfiniteWhen::TargetWithoutModel,
        Divergence::ReverseKl => InfiniteWhen::ModelWithoutTarget,
        _ => InfiniteWhen::Never,
    };
    let scan = scan(s, kind != Divergence::ForwardKl, flag);
    if scan.bad {
        // The scan only says that something is wrong; the one validation says what.
        return Err(s.validate(log_z).err().unwrap_or_else(|| {
            invalid("internal error: the validity scan and the validation disagree")
        }));
    }
    let (t, m, q) = (s.target, s.model, s.proposal);
    let ln_n = (t.len() as f64).ln();
    let mw = scan.max_w;
    let given = match log_z {
        Some(z) => Some(check_log_z(z)?),
        None if mw == f64::NEG_INFINITY => return Err(all_zero_target()),
        None => None,
    };
    if scan.infinite {
        return Ok(f64::INFINITY);
    }
    // log Z = logmeanexp(w) = m + log(S / n), from one extra pass.
    let z_from_samples = || mw + (exp_sum(t, q, mw).ln() - ln_n);
    Ok(match kind {
        Divergence::ForwardKl => match given {
            Some(_) if mw == f64::NEG_INFINITY => 0.0,
            Some(z) => gap_sums(t, m, q, mw, z)[1] * (mw - z - ln_n).exp(),
            None => {
                let [total, d] = gap_sums(t, m, q, mw, mw);
                d / total - (total.ln() - ln_n)
            }
        },
        Divergence::ReverseKl => {
            let z = given.unwrap_or_else(z_from_samples);
            let mv = scan.max_v;
            if mv == f64::NEG_INFINITY {
                0.0
            } else {
                gap_sums(m, t, q, mv, -z)[1] * (mv - ln_n).exp()
            }
        }
        Divergence::PearsonChi2 | Divergence::NeymanChi2 => {
            return Err(invalid(
                "the chi² divergences are estimated by f_divergence only (which also returns \
                 the standard error), not by divergence",
            ))
        }
        Divergence::TotalVariation | Divergence::JensenShannon => {
            let z = given.unwrap_or_else(z_from_samples);
            let top = (mw - z).max(scan.max_v);
            if top == f64::NEG_INFINITY {
                0.0
            } else {
                let serial: SerialSum = if kind == Divergence::TotalVariation {
                    tv_sum_serial
                } else {
                    js_sum_serial
                };
                0.5 * ranged_sum(serial, [t, m, q], z + top, top) * (top - ln_n).exp()
            }
        }
    })
}

/// Which samples make a KL estimate infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InfiniteWhen {
    /// `KL(p‖pi)`: `p > 0` where `pi = 0`.
    TargetWithoutModel,
    /// `KL(pi‖p)`: `pi > 0` where `p = 0`.
    ModelWithoutTarget,
    Never,
}

/// What the first pass learns.
struct Scan {
    /// `max_i (log P_i - log q_i)` over samples with `log P_i > -inf`.
    max_w: f64,
    /// `max_i (log pi_i - log q_i)` over samples with `log pi_i > -inf` (when asked for).
    max_v: f64,
    /// Some input would be refused.
    bad: bool,
    /// Some sample makes the KL asked for infinite.
    infinite: bool,
}

const NEG_INF: f64 = f64::NEG_INFINITY;
const INF: f64 = f64::INFINITY;

fn scan(s: &LogScores<'_>, with_v: bool, flag: InfiniteWhen) -> Scan {
    let (t, m, q) = (s.target, s.model, s.proposal);
    let flag = flag as usize;
    let run =
        |r: std::ops::Range<usize>| scan_serial(&t[r.clone()], &m[r.clone()], &q[r], with_v, flag);
    let [max_w, bad, max_v, infinite] = if t.len() < vexp::PARALLEL_THRESHOLD {
        run(0..t.len())
    } else {
        let tasks = t.len().div_ceil(TASK_LEN);
        (0..tasks)
            .into_par_iter()
            .map(|i| run(i * TASK_LEN..((i + 1) * TASK_LEN).min(t.len())))
            .reduce(
                || [NEG_INF, 0.0, NEG_INF, 0.0],
                |a, b| [a[0].max(b[0]), a[1] + b[1], a[2].max(b[2]), a[3] + b[3]],
            )
    };
    Scan {
        max_w,
        max_v,
        bad: bad > 0.0,
        infinite: infinite > 0.0,
    }
}

/// Elements per parallel task of the divergence passes (fixed: results do not depend on the
/// number of threads).
const TASK_LEN: usize = 1 << 15;
const BLOCK: usize = crate::consts::BLOCK;

crate::dispatch::dispatched! {
    /// `[max w, #bad, max v, #infinite]` on the calling thread (see [`Scan`]).
    #[allow(clippy::needless_bitwise_bool)] // branch-free on purpose: it vectorises
    fn scan_serial(t: &[f64], m: &[f64], q: &[f64], with_v: bool, flag: usize) -> [f64; 4] => [M] {
        let mut buf = [0.0f64; BLOCK];
        let (mut max_w, mut bad, mut max_v, mut infinite) = (NEG_INF, 0.0, NEG_INF, 0.0);
        for ((bt, bm), bq) in t.chunks(BLOCK).zip(m.chunks(BLOCK)).zip(q.chunks(BLOCK)) {
            let w = &mut buf[..bt.len()];
            // A refused sample maps to NaN, which `lane_max` flags.
            vexp::map3(bt, bm, bq, w, |ti, mi, qi| {
                let refused = !(ti < INF) | !(mi < INF) | !(qi < INF)
                    | ((qi == NEG_INF) & ((ti > NEG_INF) | (mi > NEG_INF)));
                if refused {
                    f64::NAN
                } else if ti > NEG_INF {
                    ti - qi
                } else {
                    NEG_INF
                }
            });
            let (mx, flagged) = vexp::lane_max(w);
            max_w = max_w.max(mx);
            bad += if flagged { 1.0 } else { 0.0 };
            if with_v {
                vexp::map2(bm, bq, w, |mi, qi| if mi > NEG_INF { mi - qi } else { NEG_INF });
                max_v = max_v.max(vexp::lane_max(w).0);
            }
            if flag == InfiniteWhen::TargetWithoutModel as usize {
                infinite += vexp::lane_sum_zip(bt, bm, |ti, mi| {
                    if (ti > NEG_INF) & (mi == NEG_INF) { 1.0 } else { 0.0 }
                });
            } else if flag == InfiniteWhen::ModelWithoutTarget as usize {
                infinite += vexp::lane_sum_zip(bt, bm, |ti, mi| {
                    if (mi > NEG_INF) & (ti == NEG_INF) { 1.0 } else { 0.0 }
                });
            }
        }
        [max_w, bad, max_v, infinite]
    }
}

/// `Σ_i exp(x_i - q_i - shift)` over samples with `x_i > -inf`.
fn exp_sum(x: &[f64], q: &[f64], shift: f64) -> f64 {
    vexp::sum_ranges(x.len(), |r| [exp_sum_serial(&x[r.clone()], &q[r], shift)])[0]
}

crate::dispatch::dispatched! {
    /// [`exp_sum`] on the calling thread.
    fn exp_sum_serial(x: &[f64], q: &[f64], shift: f64) -> f64 => [M] {
        let mut e = [0.0f64; BLOCK];
        let mut total = (0.0, 0.0);
        for (bx, bq) in x.chunks(BLOCK).zip(q.chunks(BLOCK)) {
            let e = &mut e[..bx.len()];
            vexp::map2(bx, bq, e, |xi, qi| masked_exp::<M>(xi, qi, shift));
            vexp::neumaier_add(&mut total, vexp::lane_sum(e, |v| v));
        }
        total.0 + total.1
    }
}

/// `e^{x - q - shift}`, exactly 0 where `x = -inf` (also when `q = -inf` there).
#[inline(always)]
fn masked_exp<M: vexp::MulAdd>(x: f64, q: f64, shift: f64) -> f64 {
    if x > NEG_INF {
        vexp::exp_nonpos_with::<M>(x - q - shift)
    } else {
        0.0
    }
}

/// `[Σ e_i, Σ e_i (x_i - y_i - c)]` with `e_i = exp(x_i - q_i - shift)`, over `x_i > -inf`.
///
/// Invariant: no sample has `x_i > -inf` and `y_i = -inf` (the KL is then infinite and the
/// caller returns before).
fn gap_sums(x: &[f64], y: &[f64], q: &[f64], shift: f64, c: f64) -> [f64; 2] {
    vexp::sum_ranges(x.len(), |r| {
        gap_sums_serial(&x[r.clone()], &y[r.clone()], &q[r], shift, c)
    })
}

crate::dispatch::dispatched! {
    /// [`gap_sums`] on the calling thread.
    fn gap_sums_serial(x: &[f64], y: &[f64], q: &[f64], shift: f64, c: f64) -> [f64; 2] => [M] {
        let mut e = [0.0f64; BLOCK];
        let mut g = [0.0f64; BLOCK];
        let mut total = [(0.0, 0.0); 2];
        for ((bx, by), bq) in x.chunks(BLOCK).zip(y.chunks(BLOCK)).zip(q.chunks(BLOCK)) {
            let e = &mut e[..bx.len()];
            let g = &mut g[..bx.len()];
            vexp::map2(bx, bq, e, |xi, qi| masked_exp::<M>(xi, qi, shift));
            vexp::map2(bx, by, g, |xi, yi| if xi > NEG_INF { xi - yi - c } else { 0.0 });
            vexp::neumaier_add(&mut total[0], vexp::lane_sum(e, |v| v));
            vexp::neumaier_add(&mut total[1], vexp::lane_sum_zip(e, g, |a, b| a * b));
        }
        total.map(|(s, c)| s + c)
    }
}

/// `Σ_i g(a_i, b_i)` with `a_i = fa(t_i, q_i)` and `b_i = fb(m_i, q_i)`: per block, `a` and `b`
/// are mapped into buffers that stay in the L1 cache, then reduced in lanes, and the block sums
/// are added with compensation (the pass of [`tv_sum_serial`] and [`js_sum_serial`]).
#[inline(always)]
fn paired_sum(
    [t, m, q]: [&[f64]; 3],
    fa: impl Fn(f64, f64) -> f64 + Copy,
    fb: impl Fn(f64, f64) -> f64 + Copy,
    g: impl Fn(f64, f64) -> f64 + Copy,
) -> f64 {
    let mut a = [0.0f64; BLOCK];
    let mut b = [0.0f64; BLOCK];
    let mut total = (0.0, 0.0);
    for ((bt, bm), bq) in t.chunks(BLOCK).zip(m.chunks(BLOCK)).zip(q.chunks(BLOCK)) {
        let a = &mut a[..bt.len()];
        let b = &mut b[..bt.len()];
        vexp::map2(bt, bq, a, fa);
        vexp::map2(bm, bq, b, fb);
        vexp::neumaier_add(&mut total, vexp::lane_sum_zip(a, b, g));
    }
    total.0 + total.1
}

/// A sum over `(t, m, q)` with the two shifts `la`, `lb`, on the calling thread.
type SerialSum = fn(&[f64], &[f64], &[f64], f64, f64) -> f64;

/// `serial(t, m, q, la, lb)` summed over fixed ranges of the samples, in parallel from
/// [`vexp::PARALLEL_THRESHOLD`] samples on (see [`vexp::sum_ranges`]).
fn ranged_sum(serial: SerialSum, [t, m, q]: [&[f64]; 3], la: f64, lb: f64) -> f64 {
    vexp::sum_ranges(t.len(), |r| {
        [serial(&t[r.clone()], &m[r.clone()], &q[r], la, lb)]
    })[0]
}

crate::dispatch::dispatched! {
    /// `Σ_i |e^{t_i - q_i - la} - e^{m_i - q_i - lb}|`, with `e^{-inf} = 0`, on the calling
    /// thread.
    fn tv_sum_serial(t: &[f64], m: &[f64], q: &[f64], la: f64, lb: f64) -> f64 => [M] {
        paired_sum(
            [t, m, q],
            |ti, qi| masked_exp::<M>(ti, qi, la),
            |mi, qi| masked_exp::<M>(mi, qi, lb),
            |a, b| (a - b).abs(),
        )
    }
}

crate::dispatch::dispatched! {
    /// `Σ_i [p_i log(2 p_i / (p_i + pi_i)) + pi_i log(2 pi_i / (p_i + pi_i))]` with
    /// `p_i = e^{t_i - q_i - la}` and `pi_i = e^{m_i - q_i - lb}` (each at most 1), on the
    /// calling thread.
    fn js_sum_serial(t: &[f64], m: &[f64], q: &[f64], la: f64, lb: f64) -> f64 => [M] {
        paired_sum(
            [t, m, q],
            |ti, qi| if ti > NEG_INF { ti - qi - la } else { NEG_INF },
            |mi, qi| if mi > NEG_INF { mi - qi - lb } else { NEG_INF },
            js_term::<M>,
        )
    }
}

/// One Jensen–Shannon term from `a = log p`, `b = log pi` (both `<= 0` or `-inf`).
///
/// With `h = max(a, b)`, `d = min(a, b) - h <= 0` and `u = e^d`:
/// `p log(2p/(p+pi)) + pi log(2pi/(p+pi)) = e^h [(1 + u)(ln 2 - ln(1 + u)) + u d]`,
/// which needs two exponentials and one `ln(1 + u)` on `[0, 1]` (vectorised), where the
/// textbook form needs two `log1p(exp(.))`. A `-inf` side gives `u = 0` and `u d = 0`.
#[inline(always)]
fn js_term<M: vexp::MulAdd>(a: f64, b: f64) -> f64 {
    let hi = if a > b { a } else { b };
    let lo = if a > b { b } else { a };
    let d = lo - hi; // NaN when both are -inf: `exp_nonpos` maps it to 0
    let u = vexp::exp_nonpos_with::<M>(d);
    let ud = if u > 0.0 { u * d } else { 0.0 };
    let bracket = M::mul_add(
        1.0 + u,
        std::f64::consts::LN_2 - vexp::ln_1p_unit::<M>(u),
        ud,
    );
    vexp::exp_nonpos_with::<M>(hi) * bracket
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
        (super::MODEL, g.model.len()),
        (super::PROPOSAL, g.proposal.len()),
    ])?;
    let n = g.n;
    if n == 0 {
        return Err(invalid(format!(
            "{TARGET} has rows of 0 samples: every context (row) needs at least one sample"
        )));
    }
    if g.target.len() % n != 0 {
        return Err(invalid(format!(
            "{TARGET} has {} values, not a whole number of rows of {n} samples",
            g.target.len()
        )));
    }
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
            let s = LogScores::new(
                &g.target[span.clone()],
                &g.model[span.clone()],
                &g.proposal[span],
            );
            estimate(kind, &s, log_z.map(|z| z[r]))
                .map_err(|e| invalid(format!("context (row) {r}: {e}")))
        })
        .collect()
}
