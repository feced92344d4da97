//! Maximum-entropy coefficients: the damped Newton solver for `lambda` (DESIGN §4).
//!
//! Samples `i = 1..N` come from a proposal `q`, each with a log-weight
//! `lw_i = log a_i + log b_i - log q_i` (`-inf`: the sample weighs zero), a feature vector
//! `phi_i in R^K` and, for conditional targets, the index `g_i` of the context it was drawn for.
//! The solver minimises the sample estimate of the convex dual
//!
//! ```text
//! L(lambda) = mean_c [ log Z_c(lambda) ] - lambda . mu_bar,
//! Z_c(lambda) = mean_{i in c} exp(lw_i + lambda . phi_i)
//! ```
//!
//! whose gradient is `mean_c E_c[phi] - mu_bar` and Hessian `mean_c Cov_c[phi]`, with `E_c` and
//! `Cov_c` self-normalised within context `c` (pooling the contexts would be biased). Without
//! groups there is one context.
//!
//! Implementation notes:
//! - The features are copied once, grouped by context, with the zero-weight samples dropped
//!   (they count in `Z_c`'s `1 / n_c` only) and centred on the targets: `x_i = phi_i - mu_bar`.
//!   Then `L(lambda) = mean_c log mean_{i in c} exp(lw_i + lambda . x_i)` exactly, the
//!   gradient is `mean_c E_c[x]` and no `lambda . mu_bar` cancellation is left.
//! - Columns are stored contiguously and every pass works block by block (512 rows), taking
//!   all its sums over a block while it is in cache: `s = lw + X lambda`, then `sum e`,
//!   `sum e^2` and `sum e x_k`, then the K(K+1)/2 centred cross sums `sum e (x_a - m_a)(x_b - m_b)`
//!   (about the current means, not `E[x x^T] - E[x] E[x]^T`, which cancels). Block totals enter
//!   compensated sums; long contexts run in parallel in fixed-size tasks (deterministic).
//! - Buffers of length N are allocated once; an iteration allocates nothing of size N.
//! - Steps are damped twice: an Armijo backtracking line search on `L`, started at the longest
//!   step that changes no ratio of two samples' weights by more than `e^20` (Newton steps from a
//!   point where the weights have collapsed onto a few samples can be astronomically long).
//! - Unattainable targets fail loudly, never with a huge or non-finite `lambda`. Before the loop:
//!   a target outside or on the edge of its feature's range, a constant feature, collinear
//!   features. During the loop, for targets that are each in range but not together: the
//!   attainable moments are the average over contexts of each context's convex hull, with
//!   support function `h(v) = mean_c max_{i in c} v . phi_i`; the iterate `lambda` and the last
//!   step are tried as `v`, and `h(v) < v . mu_bar` proves the targets unattainable (Farkas),
//!   `h(v) = v . mu_bar` (to rounding) puts them on the boundary (infinite coefficients). As a
//!   second certificate, weak duality bounds the dual below by
//!   `B = mean_c [min_{i in c} lw_i - log n_c]` for every attainable target (the optimum is
//!   `mean_c log Z_c(0)` minus a KL divergence to the base weights, at most `log(1 / min w_i)`).

use rayon::prelude::*;

use crate::error::{
    check_finite, check_finite_matrix, check_log_scores, check_non_empty, invalid, Error, Result,
};
use crate::vexp;

pub const FEATURES: &str = "features";
pub const TARGETS: &str = "target_moments";
pub const LOG_WEIGHTS: &str = "log_weights";
pub const GROUPS: &str = "groups";
pub const INITIAL: &str = "initial";

/// Default stopping tolerance on `|mean_c E_c[phi_k] - mu_bar_k|`, relative to the range that
/// feature `k` takes on the samples.
pub const DEFAULT_TOLERANCE: f64 = 1e-8;
/// Default cap on Newton iterations.
pub const DEFAULT_MAX_ITERATIONS: usize = 100;

/// Armijo's sufficient-decrease constant.
const ARMIJO: f64 = 1e-4;
/// Step halvings tried before the line search gives up (2^-60 ~ 1e-18).
const MAX_HALVINGS: usize = 60;
/// A feature whose unexplained share of variance (given the previous features) falls below this
/// is reported as collinear with them: with this much redundancy the Hessian's condition number
/// exceeds 1e10 everywhere and the coefficients are not identified to any useful precision.
const COLLINEAR: f64 = 1e-10;
/// Damping: one step changes no ratio of two samples' weights by more than `e^20`. Newton steps
/// from a point where the weights have collapsed onto a few samples (a tiny, rounding-dominated
/// Hessian) can be astronomically long; this keeps them in the region where `L` is resolved,
/// and costs nothing near the solution, where steps are short.
const MAX_LOG_RATIO_CHANGE: f64 = 20.0;
/// Relative size of the smallest Cholesky pivot accepted for a Newton step.
const PIVOT: f64 = 1e-13;
/// Elements per parallel task in the sums; fixed so results do not depend on the thread count.
const TASK_LEN: usize = 1 << 15;
use crate::consts::BLOCK;

/// What to fit: a row-major `rows x cols` feature matrix and its targets.
#[derive(Debug, Clone, Copy)]
pub struct Problem<'a> {
    /// Row-major `rows x cols` finite feature values, `phi_i` in row `i`.
    pub features: &'a [f64],
    pub rows: usize,
    pub cols: usize,
    /// `mu_bar`, one target per feature (column).
    pub targets: &'a [f64],
    /// `log a_i + log b_i - log q_i` per sample (finite or `-inf`); `None` means all zero.
    pub log_weights: Option<&'a [f64]>,
    /// Context index per sample, numbering contexts `0..C-1`; `None` means one context.
    pub groups: Option<&'a [i64]>,
}

/// How to fit.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Stop when every moment is within this many times its feature's range (on the samples
    /// of nonzero weight, averaged over contexts as in the range check) of its target.
    pub tolerance: f64,
    /// Newton steps allowed before [`Error::NoConvergence`].
    pub max_iterations: usize,
    /// Starting coefficients (zeros by default).
    pub initial: Option<&'a [f64]>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            tolerance: DEFAULT_TOLERANCE,
            max_iterations: DEFAULT_MAX_ITERATIONS,
            initial: None,
        }
    }
}

/// The fitted coefficients and what they achieve on the samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// `lambda`, finite.
    pub coefficients: Vec<f64>,
    /// Newton steps taken (0 when the starting point already met the tolerance).
    pub iterations: usize,
    /// `mean_c E_c[phi]` at `lambda`.
    pub moments: Vec<f64>,
    /// `max_k |moments_k - mu_bar_k|`; each `|moments_k - mu_bar_k|` is below the tolerance
    /// times feature `k`'s range.
    pub max_error: f64,
    /// Kish's effective sample size `1 / sum_i w_i^2` of the final weights of each context,
    /// averaged over the contexts (with one context, the ESS of the fit).
    pub ess: f64,
    /// `mean_c log Z_c(lambda)`, the estimated log-normaliser of the fitted target.
    pub log_z: f64,
}

/// Fits `lambda` by damped Newton with an Armijo backtracking line search (DESIGN §4).
///
/// Refuses (as [`Error::InvalidInput`]) bad shapes and values, contexts without a sample of
/// nonzero weight, targets outside or on the boundary of a feature's attainable range, constant
/// and collinear features, and targets that are jointly unattainable; fails with
/// [`Error::NoConvergence`] (carrying the last iterate) when `max_iterations` is not enough.
pub fn fit(problem: &Problem<'_>, options: &Options<'_>) -> Result<Fit> {
    let data = Prepared::new(problem, options)?;
    data.check_ranges()?;
    data.check_collinear()?;
    Solver::new(&data).run(options)
}

/// The kept samples, grouped by context, as centred columns.
struct Prepared {
    k: usize,
    /// Kept samples (nonzero weight).
    m: usize,
    /// `x_ik = phi_ik - mu_bar_k`, column `k` at `cols[k * m..(k + 1) * m]`, grouped by context.
    cols: Vec<f64>,
    /// Finite log-weights of the kept samples, in the same order; empty when none were given
    /// (all zero), so that no buffer of N zeros is held.
    lw: Vec<f64>,
    /// Context `c` holds kept samples `offsets[c]..offsets[c + 1]`.
    offsets: Vec<usize>,
    /// `log n_c`, with `n_c` counting every sample of context `c` (zero weights included).
    log_counts: Vec<f64>,
    targets: Vec<f64>,
    /// `(min, max)` of feature `j` over the kept samples of context `c` at `ranges[c * k + j]`.
    ranges: Vec<(f64, f64)>,
    /// `max(|mu_bar_k|, max_i |phi_ik|)` per feature: the scale of the rounding in `x_ik`, used
    /// by [`Solver::hull_certificate`].
    col_scale: Vec<f64>,
    /// The range `mean_c max_{i in c} phi_ik - mean_c min_{i in c} phi_ik` of each feature,
    /// the unit of the tolerance (positive once [`Prepared::check_ranges`] has passed).
    widths: Vec<f64>,
    /// The dual's lower bound over attainable targets, `mean_c [min_{i in c} lw_i - log n_c]`.
    lower_bound: f64,
}

impl Prepared {
    fn new(p: &Problem<'_>, o: &Options<'_>) -> Result<Self> {
        let (n, k) = (p.rows, p.cols);
        if p.features.len() != n * k {
            return Err(invalid(format!(
                "{FEATURES} has {} values, not {n} rows x {k} columns",
                p.features.len()
            )));
        }
        check_non_empty(FEATURES, n)?;
        if k == 0 {
            return Err(invalid(format!(
                "{FEATURES} has no columns: at least one feature is needed"
            )));
        }
        if p.targets.len() != k {
            return Err(invalid(format!(
                "shape mismatch: {FEATURES} has {k} columns but {TARGETS} has {} values",
                p.targets.len()
            )));
        }
        for (name, len) in [
            (LOG_WEIGHTS, p.log_weights.map(<[f64]>::len)),
            (GROUPS, p.groups.map(<[i64]>::len)),
        ] {
            if let Some(len) = len.filter(|&len| len != n) {
                return Err(invalid(format!(
                    "length mismatch: {FEATURES} has {n} rows but {name} has {len} values"
                )));
            }
        }
        if let Some(init) = o.initial {
            if init.len() != k {
                return Err(invalid(format!(
                    "shape mismatch: {FEATURES} has {k} columns but {INITIAL} has {} values",
                    init.len()
                )));
            }
            check_finite(INITIAL, init)?;
        }
        check_finite_matrix(FEATURES, p.features, k)?;
        check_finite(TARGETS, p.targets)?;
        if let Some(lw) = p.log_weights {
            check_log_scores(LOG_WEIGHTS, lw)?;
            if lw.iter().all(|&v| v == f64::NEG_INFINITY) {
                return Err(invalid(format!(
                    "every entry of {LOG_WEIGHTS} is -inf: all samples weigh zero, so no moment \
                     can be estimated from them"
                )));
            }
        }
        if !(o.tolerance > 0.0 && o.tolerance.is_finite()) {
            return Err(invalid(format!(
                "tolerance is {}: it must be positive and finite",
                o.tolerance
            )));
        }

        let weight = |i: usize| p.log_weights.map_or(0.0, |lw| lw[i]);
        let kept = |i: usize| weight(i) > f64::NEG_INFINITY;
        let contexts = match p.groups {
            None => 1,
            Some(g) => count_contexts(g)?,
        };
        let group = |i: usize| p.groups.map_or(0, |g| g[i] as usize);
        let mut counts = vec![0usize; contexts];
        let mut kept_counts = vec![0usize; contexts];
        for i in 0..n {
            counts[group(i)] += 1;
            kept_counts[group(i)] += usize::from(kept(i));
        }
        if let Some(c) = counts.iter().position(|&c| c == 0) {
            return Err(invalid(format!(
                "context {c} has no samples: {GROUPS} must number the contexts 0..{} without gaps",
                contexts - 1
            )));
        }
        if let Some(c) = kept_counts.iter().position(|&c| c == 0) {
            return Err(invalid(format!(
                "context {c} has no sample with nonzero weight (all its {} {LOG_WEIGHTS} are \
                 -inf): its moments cannot be estimated",
                counts[c]
            )));
        }
        // A stable counting sort by context.
        let mut offsets = Vec::with_capacity(contexts + 1);
        offsets.push(0);
        for &c in &kept_counts {
            offsets.push(offsets[offsets.len() - 1] + c);
        }
        let m = offsets[contexts];
        let mut next = offsets[..contexts].to_vec();
        let mut cols = vec![0.0; m * k];
        let mut lw = if p.log_weights.is_some() {
            vec![0.0; m]
        } else {
            Vec::new()
        };
        let mut ranges = vec![(f64::INFINITY, f64::NEG_INFINITY); contexts * k];
        for i in (0..n).filter(|&i| kept(i)) {
            let c = group(i);
            let slot = next[c];
            next[c] += 1;
            if let Some(w) = lw.get_mut(slot) {
                *w = weight(i);
            }
            let row = p.features[i * k..(i + 1) * k].iter().zip(p.targets);
            for (j, ((&phi, &mu), range)) in row.zip(&mut ranges[c * k..(c + 1) * k]).enumerate() {
                cols[j * m + slot] = phi - mu;
                *range = (range.0.min(phi), range.1.max(phi));
            }
        }
        let log_counts: Vec<f64> = counts.iter().map(|&c| (c as f64).ln()).collect();
        let lower_bound = mean((0..contexts).map(|c| {
            let min_lw = if lw.is_empty() {
                0.0
            } else {
                lw[offsets[c]..offsets[c + 1]]
                    .iter()
                    .fold(f64::INFINITY, |a, &b| a.min(b))
            };
            min_lw - log_counts[c]
        }));
        let col_scale = (0..k)
            .map(|j| {
                (0..contexts).fold(p.targets[j].abs(), |a, c| {
                    let (lo, hi) = ranges[c * k + j];
                    a.max(lo.abs()).max(hi.abs())
                })
            })
            .collect();
        let widths = (0..k)
            .map(|j| {
                let lo = mean((0..contexts).map(|c| ranges[c * k + j].0));
                let hi = mean((0..contexts).map(|c| ranges[c * k + j].1));
                let width = hi - lo;
                if width.is_finite() {
                    width
                } else {
                    f64::MAX
                }
            })
            .collect();
        Ok(Self {
            widths,
            k,
            m,
            cols,
            lw,
            offsets,
            log_counts,
            targets: p.targets.to_vec(),
            ranges,
            col_scale,
            lower_bound,
        })
    }

    fn contexts(&self) -> usize {
        self.log_counts.len()
    }

    fn span(&self, c: usize) -> std::ops::Range<usize> {
        self.offsets[c]..self.offsets[c + 1]
    }

    /// "on the samples" or "within each context", for messages.
    fn scope(&self) -> &'static str {
        if self.contexts() == 1 {
            "on the samples with nonzero weight"
        } else {
            "within each context, on the samples with nonzero weight"
        }
    }

    /// Refuses constant features and targets outside or on the edge of what a feature can reach.
    ///
    /// With `C` contexts the average `mean_c E_c[phi_k]` ranges over
    /// `[mean_c min_{i in c} phi_ik, mean_c max_{i in c} phi_ik]`; with one, over `[min, max]`.
    fn check_ranges(&self) -> Result<()> {
        let k = self.k;
        for (j, &mu) in self.targets.iter().enumerate() {
            // With one context these are the exact extremes, compared exactly with the target.
            let lo = mean((0..self.contexts()).map(|c| self.ranges[c * k + j].0));
            let hi = mean((0..self.contexts()).map(|c| self.ranges[c * k + j].1));
            let constant = (0..self.contexts()).all(|c| {
                let (a, b) = self.ranges[c * k + j];
                a == b
            });
            let what = if self.contexts() == 1 {
                format!("feature {j}")
            } else {
                format!(
                    "the average over the {} contexts of feature {j}",
                    self.contexts()
                )
            };
            if constant {
                let value = self.ranges[j].0;
                return Err(invalid(format!(
                    "feature {j} is constant {}{}: its coefficient is not identified (its \
                     covariance is zero); drop it",
                    self.scope(),
                    if self.contexts() == 1 {
                        format!(" (always {value})")
                    } else {
                        String::new()
                    }
                )));
            }
            let range = format!("[{lo}, {hi}]");
            if mu < lo || mu > hi {
                return Err(invalid(format!(
                    "{TARGETS}[{j}] = {mu} is outside the range {range} that {what} takes on the \
                     samples with nonzero weight: no reweighting of these samples can reach it"
                )));
            }
            if mu == lo || mu == hi {
                return Err(invalid(format!(
                    "{TARGETS}[{j}] = {mu} is on the boundary of the range {range} that {what} \
                     takes on the samples with nonzero weight: meeting it would need an infinite \
                     coefficient (all weight on the samples at that extreme)"
                )));
            }
        }
        Ok(())
    }

    /// Refuses features that are (within each context) affine functions of others: the
    /// covariance is then singular for every `lambda`.
    ///
    /// The test is on the unweighted covariance of the kept samples, averaged over contexts,
    /// whose null space is the Hessian's for every finite `lambda`; it is scaled to a correlation
    /// matrix and factorised by Cholesky, and feature `j` fails when the share of its variance
    /// not explained by features `0..j` is below [`COLLINEAR`].
    fn check_collinear(&self) -> Result<()> {
        let k = self.k;
        let mut cov = vec![0.0; k * k];
        let mut means = vec![0.0; k];
        let mut acc = vec![(0.0, 0.0); (k + 2).max(k * (k + 1) / 2)];
        let ones = |_: usize, _: usize, out: &mut [f64]| out.fill(1.0);
        // Each column in units of a power of two near its magnitude: the correlation matrix
        // below does not depend on the units, and the products then stay in range.
        let inv_units: Vec<f64> = self
            .col_scale
            .iter()
            .map(|&v| {
                let unit = f64::from_bits(v.to_bits() & (0x7ffu64 << 52));
                if unit > 0.0 && unit.is_finite() && (1.0 / unit).is_finite() {
                    1.0 / unit
                } else {
                    1.0
                }
            })
            .collect();
        for c in 0..self.contexts() {
            let total = self.span(c).len() as f64;
            moment_sums(self, c, &ones, &mut acc);
            for (j, mean) in means.iter_mut().enumerate() {
                *mean = (acc[2 + j].0 + acc[2 + j].1) / total;
            }
            covariance_sums(self, c, &ones, &means, &inv_units, &mut acc);
            let mut slot = 0;
            for a in 0..k {
                for b in 0..=a {
                    cov[a * k + b] += (acc[slot].0 + acc[slot].1) / total;
                    slot += 1;
                }
            }
        }
        let scale: Vec<f64> = (0..k).map(|j| cov[j * k + j].sqrt()).collect();
        for a in 0..k {
            for b in 0..=a {
                cov[a * k + b] /= scale[a] * scale[b];
            }
        }
        let mut l = vec![0.0; k * k];
        if let Err(j) = cholesky(&cov, k, &mut l, COLLINEAR) {
            // Regression of feature j on features 0..j: beta = L_p^{-T} L[j, 0..j].
            let mut beta: Vec<f64> = l[j * k..j * k + j].to_vec();
            for a in (0..j).rev() {
                beta[a] /= l[a * k + a];
                for b in 0..a {
                    beta[b] -= l[a * k + b] * beta[a];
                }
            }
            let biggest = beta.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let mut involved: Vec<usize> =
                (0..j).filter(|&a| beta[a].abs() > 1e-6 * biggest).collect();
            involved.push(j);
            return Err(invalid(format!(
                "features {} are collinear {}: feature {j} is an affine function of {} (up to a \
                 residual below {COLLINEAR:e} of its variance), so the feature covariance is \
                 singular and their coefficients are not identified; drop or merge one of them",
                list(&involved),
                self.scope(),
                if involved.len() == 2 {
                    format!("feature {}", involved[0])
                } else {
                    format!("features {}", list(&involved[..involved.len() - 1]))
                }
            )));
        }
        Ok(())
    }
}

/// Number of contexts `C = max g + 1`, refusing negative indices and indices that leave a
/// context without samples for certain (so that nothing of size `C` is allocated blindly).
fn count_contexts(groups: &[i64]) -> Result<usize> {
    let n = groups.len();
    let mut max = 0i64;
    for (i, &g) in groups.iter().enumerate() {
        if g < 0 {
            return Err(invalid(format!(
                "{GROUPS}[{i}] is {g}: context indices must be in 0..C-1"
            )));
        }
        if g as u64 >= n as u64 {
            return Err(invalid(format!(
                "{GROUPS}[{i}] is {g} but there are only {n} samples: context indices must \
                 number the contexts 0..C-1, each with at least one sample"
            )));
        }
        max = max.max(g);
    }
    Ok(max as usize + 1)
}

fn list(items: &[usize]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => {
            let head: Vec<String> = init.iter().map(ToString::to_string).collect();
            format!("{} and {last}", head.join(", "))
        }
    }
}

fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len() as f64;
    vexp::compensated_sum(values) / n
}

/// Lower-triangular Cholesky factor `l` of the symmetric `k x k` matrix whose lower triangle is
/// in `a` (row-major). Fails with the index of the first pivot `d_j <= rel * a_jj`
/// (or not positive), i.e. where column `j` is numerically dependent on columns `0..j`.
fn cholesky(a: &[f64], k: usize, l: &mut [f64], rel: f64) -> std::result::Result<(), usize> {
    for j in 0..k {
        for i in j..k {
            let mut sum = a[i * k + j];
            for p in 0..j {
                sum -= l[i * k + p] * l[j * k + p];
            }
            if i == j {
                if !(sum > rel * a[j * k + j]) || !sum.is_finite() {
                    // Keep the partial row so the caller can explain the dependence.
                    return Err(j);
                }
                l[j * k + j] = sum.sqrt();
            } else {
                l[i * k + j] = sum / l[j * k + j];
            }
        }
    }
    Ok(())
}

/// Solves `L L^T x = b` in place.
fn cholesky_solve(l: &[f64], k: usize, x: &mut [f64]) {
    for i in 0..k {
        let mut s = x[i];
        for p in 0..i {
            s -= l[i * k + p] * x[p];
        }
        x[i] = s / l[i * k + i];
    }
    for i in (0..k).rev() {
        let mut s = x[i];
        for p in i + 1..k {
            s -= l[p * k + i] * x[p];
        }
        x[i] = s / l[i * k + i];
    }
}

/// Runs `block(lo, hi, acc)` over the rows `0..len` of one context, [`BLOCK`] rows at a time,
/// accumulating into `acc` (reset first).
///
/// A pass takes all its sums over one block before moving on, so each column is read from
/// memory once per pass rather than once per sum (the K(K+1)/2 covariance sums would otherwise
/// stream the columns K times over). Long contexts are split into [`TASK_LEN`]-row tasks run in
/// parallel and merged in order; as `TASK_LEN` is a multiple of `BLOCK`, the blocks, and so the
/// result, do not depend on the number of threads.
fn blocked_sums(
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

use crate::vexp::lane_sum3 as lane_sum;

/// Fills a block's weights: `fill(lo, hi, out)` writes the weights of rows `lo..hi` of one
/// context (positions relative to its start) into `out[..hi - lo]`.
trait BlockWeights: Fn(usize, usize, &mut [f64]) + Sync {}
impl<F: Fn(usize, usize, &mut [f64]) + Sync> BlockWeights for F {}

/// For context `c` with weights from `weights`: `acc[0] = sum e`, `acc[1] = sum e^2`,
/// `acc[2 + j] = sum e x_j`, and, when `acc` has room, `acc[k + 2] = sum of the weights
/// below 1` (see [`Solver::evaluate`]) and `acc[k + 3]` the count of weights equal to 1.
fn moment_sums(d: &Prepared, c: usize, weights: &impl BlockWeights, acc: &mut [(f64, f64)]) {
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
fn covariance_sums(
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
fn scores_into(
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

/// `(min, max)` of the scores of context `c` (see [`scores_into`]) and whether any is not
/// finite; computed block by block, nothing of size N is stored.
fn score_range(d: &Prepared, c: usize, coef: &[f64], with_log_weights: bool) -> (f64, f64, bool) {
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
            lo_v = buf[..e - b].iter().fold(lo_v, |a, &v| a.min(v));
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
fn log_sum_from_parts(max: f64, below: f64, ones: f64) -> f64 {
    max + ((ones - 1.0) + below).ln_1p()
}

/// The dual at one point: value, gradient, Hessian and ESS.
struct Eval {
    /// `L(lambda)` (with the centred features, the `- lambda . mu_bar` term is inside).
    value: f64,
    /// Rounding scale of `value`: `|L| + mean_c |max_i s_i|`.
    magnitude: f64,
    /// `mean_c E_c[x]` = moments minus targets.
    gradient: Vec<f64>,
    /// `mean_c Cov_c[x]`, lower triangle, row-major `k x k`.
    hessian: Vec<f64>,
    ess: f64,
}

struct Solver<'a> {
    data: &'a Prepared,
    /// Per-context means, scratch.
    means: Vec<f64>,
    /// `k` ones: the Hessian's sums are taken in the features' own units.
    ones: Vec<f64>,
    /// Compensated accumulators for the sums of one context, scratch.
    acc: Vec<(f64, f64)>,
}

impl<'a> Solver<'a> {
    fn new(data: &'a Prepared) -> Self {
        let k = data.k;
        Self {
            data,
            means: vec![0.0; k],
            ones: vec![1.0; k],
            acc: vec![(0.0, 0.0); (k + 4).max(k * (k + 1) / 2)],
        }
    }

    /// The largest score `lw_i + lambda . x_i` of context `c`, or `None` if any overflowed.
    fn max_score(&self, lambda: &[f64], c: usize) -> Option<f64> {
        let (_, max, bad) = score_range(self.data, c, lambda, true);
        (!bad).then_some(max)
    }

    /// `(L(lambda), rounding scale)`, or `None` where the scores overflow.
    ///
    /// Memory: the scores and weights are recomputed block by block in each pass (a few
    /// multiply-adds per feature), so a pass holds one block, never an array of size N.
    fn value(&mut self, lambda: &[f64]) -> Option<(f64, f64)> {
        let d = self.data;
        let (mut total, mut scale) = ((0.0, 0.0), 0.0);
        for c in 0..d.contexts() {
            let max = self.max_score(lambda, c)?;
            let mut parts = [(0.0, 0.0); 2];
            blocked_sums(d.span(c).len(), &mut parts, |lo, hi, acc| {
                let (mut s, mut e) = ([0.0; BLOCK], [0.0; BLOCK]);
                scores_into(d, c, lambda, true, lo, hi, &mut s);
                vexp::exp_into(&s[..hi - lo], max, &mut e[..hi - lo]);
                let e = &e[..hi - lo];
                let below = lane_sum(e, e, e, |v, _, _| if v < 1.0 { v } else { 0.0 });
                let ones = lane_sum(e, e, e, |v, _, _| if v < 1.0 { 0.0 } else { 1.0 });
                vexp::neumaier_add(&mut acc[0], below);
                vexp::neumaier_add(&mut acc[1], ones);
            });
            let sum = |a: (f64, f64)| a.0 + a.1;
            let lse = log_sum_from_parts(max, sum(parts[0]), sum(parts[1]));
            vexp::neumaier_add(&mut total, lse - d.log_counts[c]);
            scale += max.abs();
        }
        let contexts = d.contexts() as f64;
        let value = (total.0 + total.1) / contexts;
        value
            .is_finite()
            .then_some((value, value.abs() + scale / contexts))
    }

    /// Value, gradient, Hessian and ESS at `lambda`: three passes per context (the largest
    /// score; the weights' sums and first moments; the centred second moments), each
    /// recomputing the weights `e_i = exp(s_i - max)` of a block while it is in cache.
    fn evaluate(&mut self, lambda: &[f64], out: &mut Eval) -> Option<()> {
        let d = self.data;
        let k = d.k;
        let contexts = d.contexts() as f64;
        out.gradient.fill(0.0);
        out.hessian.fill(0.0);
        let (mut total, mut scale, mut ess) = ((0.0, 0.0), 0.0, 0.0);
        for c in 0..d.contexts() {
            let max = self.max_score(lambda, c)?;
            let weights = |lo: usize, hi: usize, out: &mut [f64]| {
                let mut s = [0.0; BLOCK];
                scores_into(d, c, lambda, true, lo, hi, &mut s);
                vexp::exp_into(&s[..hi - lo], max, &mut out[..hi - lo]);
            };
            moment_sums(d, c, &weights, &mut self.acc);
            let sum = |a: (f64, f64)| a.0 + a.1;
            let lse = log_sum_from_parts(max, sum(self.acc[k + 2]), sum(self.acc[k + 3]));
            vexp::neumaier_add(&mut total, lse - d.log_counts[c]);
            scale += max.abs();
            let norm = sum(self.acc[0]);
            ess += norm * norm / sum(self.acc[1]);
            for j in 0..k {
                self.means[j] = sum(self.acc[2 + j]) / norm;
                out.gradient[j] += self.means[j];
            }
            covariance_sums(d, c, &weights, &self.means, &self.ones, &mut self.acc);
            let mut slot = 0;
            for a in 0..k {
                for b in 0..=a {
                    out.hessian[a * k + b] += sum(self.acc[slot]) / norm;
                    slot += 1;
                }
            }
        }
        out.value = (total.0 + total.1) / contexts;
        out.magnitude = out.value.abs() + scale / contexts;
        out.ess = ess / contexts;
        for g in &mut out.gradient {
            *g /= contexts;
        }
        for h in &mut out.hessian {
            *h /= contexts;
        }
        out.value.is_finite().then_some(())
    }

    fn run(mut self, options: &Options<'_>) -> Result<Fit> {
        let d = self.data;
        let k = d.k;
        let mut lambda = options
            .initial
            .map_or_else(|| vec![0.0; k], <[f64]>::to_vec);
        let mut trial = vec![0.0; k];
        let mut step = vec![0.0; k];
        let mut factor = vec![0.0; k * k];
        let mut damped = vec![0.0; k * k];
        let mut at = Eval {
            value: 0.0,
            magnitude: 0.0,
            gradient: vec![0.0; k],
            hessian: vec![0.0; k * k],
            ess: 0.0,
        };
        let mut taken = vec![0.0; k];
        let mut iterations = 0;
        loop {
            if self.evaluate(&lambda, &mut at).is_none() {
                return Err(invalid(format!(
                    "the weights overflow at the {} coefficients {lambda:?}: {} are too large \
                     for these features",
                    if iterations == 0 {
                        "initial"
                    } else {
                        "current"
                    },
                    if iterations == 0 { INITIAL } else { "they" }
                )));
            }
            let (worst, max_error) =
                at.gradient
                    .iter()
                    .enumerate()
                    .fold(
                        (0, 0.0f64),
                        |(w, m), (j, g)| if g.abs() > m { (j, g.abs()) } else { (w, m) },
                    );
            // The tolerance is relative to each feature's range on the samples (so a feature
            // and the same feature times 1e-8 are fitted alike); for a 0/1 feature it is absolute.
            let converged = at
                .gradient
                .iter()
                .zip(&d.widths)
                .all(|(g, w)| g.abs() < options.tolerance * w);
            if converged {
                let moments: Vec<f64> = at
                    .gradient
                    .iter()
                    .zip(&d.targets)
                    .map(|(g, mu)| mu + g)
                    .collect();
                let shift =
                    vexp::compensated_sum(lambda.iter().zip(&d.targets).map(|(l, mu)| l * mu));
                return Ok(Fit {
                    coefficients: lambda,
                    iterations,
                    moments,
                    max_error,
                    ess: at.ess,
                    log_z: at.value + shift,
                });
            }
            // Not there yet: do the iterates point at a target outside the attainable set?
            if iterations > 0 {
                for direction in [&lambda, &taken] {
                    if let Some(err) = self.hull_certificate(direction) {
                        return Err(err);
                    }
                }
            }
            if at.value < d.lower_bound - 1e-9 * (1.0 + d.lower_bound.abs()) {
                return Err(self.below_bound(&lambda, at.value));
            }
            if iterations >= options.max_iterations {
                return Err(Error::NoConvergence {
                    message: format!(
                        "fit_coefficients did not converge within {} iterations: the largest \
                         moment error is {max_error:e} (feature {worst}, whose range on the samples is \
                         {:e}) against a tolerance of {:e} of the range; raise max_iterations or the tolerance, or start from the last \
                         coefficients",
                        options.max_iterations, d.widths[worst], options.tolerance
                    ),
                    last: lambda,
                    iterations,
                    max_error,
                });
            }
            newton_direction(&at, k, &mut factor, &mut damped, &mut step);
            let mut slope: f64 = at.gradient.iter().zip(&step).map(|(g, s)| g * s).sum();
            if !(slope < 0.0) {
                // Rounding made the Newton direction useless: fall back to steepest descent,
                // scaled by the Hessian's diagonal.
                for (j, (s, g)) in step.iter_mut().zip(&at.gradient).enumerate() {
                    *s = -g / at.hessian[j * k + j].max(f64::MIN_POSITIVE);
                }
                slope = at.gradient.iter().zip(&step).map(|(g, s)| g * s).sum();
            }
            // Armijo with a slack for the rounding of L, so that a Newton step near the optimum,
            // whose decrease is below what L can resolve, is still taken.
            let slack = 64.0 * f64::EPSILON * at.magnitude;
            let mut t = self.step_cap(&step);
            let mut accepted = false;
            for _ in 0..=MAX_HALVINGS {
                for j in 0..k {
                    trial[j] = lambda[j] + t * step[j];
                }
                if trial.iter().all(|v| v.is_finite()) {
                    if let Some((value, _)) = self.value(&trial) {
                        if value <= at.value + ARMIJO * t * slope + slack {
                            accepted = true;
                            break;
                        }
                    }
                }
                t *= 0.5;
            }
            if !accepted {
                if let Some(err) = self.hull_certificate(&step) {
                    return Err(err);
                }
                return Err(Error::NoConvergence {
                    message: format!(
                        "fit_coefficients stalled at iteration {iterations}: the line search \
                         found no step that lowers the dual objective (largest moment error \
                         {max_error:e}, feature {worst}); the targets may lie on the boundary of \
                         what these samples can express"
                    ),
                    last: lambda,
                    iterations,
                    max_error,
                });
            }
            for j in 0..k {
                taken[j] = trial[j] - lambda[j];
            }
            std::mem::swap(&mut lambda, &mut trial);
            iterations += 1;
        }
    }

    /// `(min, max)` of `dir . x_i` over context `c`.
    fn project(&mut self, dir: &[f64], c: usize) -> (f64, f64) {
        let (lo, hi, _) = score_range(self.data, c, dir, false);
        (lo, hi)
    }

    /// The largest step along `dir` that changes no log-weight ratio by more than
    /// [`MAX_LOG_RATIO_CHANGE`]: `MAX / (max_i dir . x_i - min_i dir . x_i)`, at most 1.
    fn step_cap(&mut self, dir: &[f64]) -> f64 {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for c in 0..self.data.contexts() {
            let (a, b) = self.project(dir, c);
            lo = lo.min(a);
            hi = hi.max(b);
        }
        let spread = hi - lo;
        if spread > MAX_LOG_RATIO_CHANGE {
            MAX_LOG_RATIO_CHANGE / spread
        } else {
            1.0
        }
    }

    /// An error when the direction `dir` proves the targets unattainable with finite
    /// coefficients, `None` otherwise.
    ///
    /// The moments `mean_c E_c[phi]` reachable by reweighting form the average over contexts of
    /// each context's convex hull, whose support function in direction `dir` is
    /// `h(dir) = mean_c max_{i in c} dir . phi_i`. If `h(dir) < dir . mu_bar` no weights reach
    /// `mu_bar` (Farkas); if `h(dir) = dir . mu_bar`, `mu_bar` is on the boundary and only
    /// infinite coefficients reach it (the features are not collinear, so not every sample lies
    /// on that face). With centred features the test reads `mean_c max_{i in c} dir . x_i`
    /// against 0; within a rounding margin relative to `sum_k |dir_k| max(|mu_k|, max_i |phi_ik|)`
    /// it is taken as 0 (on the boundary).
    fn hull_certificate(&mut self, dir: &[f64]) -> Option<Error> {
        let d = self.data;
        let scale: f64 = dir.iter().zip(&d.col_scale).map(|(a, b)| a.abs() * b).sum();
        if !(scale > 0.0 && scale.is_finite()) {
            return None;
        }
        let mut support = (0.0, 0.0);
        for c in 0..d.contexts() {
            vexp::neumaier_add(&mut support, self.project(dir, c).1);
        }
        let gap = (support.0 + support.1) / d.contexts() as f64;
        let rounding = 16.0 * (d.k as f64 + 1.0) * f64::EPSILON * scale;
        let outside = gap < -rounding;
        if !outside && gap > rounding {
            return None;
        }
        let top = dir.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let dir: Vec<f64> = dir.iter().map(|v| v / top).collect();
        let at_target = vexp::compensated_sum(dir.iter().zip(&d.targets).map(|(a, b)| a * b));
        let shown: Vec<String> = dir.iter().map(|v| format!("{v:.6}")).collect();
        let (hull, largest) = if d.contexts() == 1 {
            (
                "the convex hull of the feature vectors of the samples with nonzero weight",
                "the largest value of v . phi over those samples",
            )
        } else {
            (
                "the set of averages over the contexts of points of each context's convex hull \
                 (of the feature vectors of its samples with nonzero weight)",
                "the mean over contexts of each context's largest v . phi",
            )
        };
        let head = format!(
            "along v ≈ [{}], {largest} is {} while v . {TARGETS} = {at_target}",
            shown.join(", "),
            gap / top + at_target
        );
        Some(invalid(if outside {
            format!(
                "{TARGETS} cannot be met together on these samples: each target lies inside its \
                 own feature's range, but the target vector lies outside {hull}: {head}, so no \
                 reweighting of the samples reaches it (the coefficients diverge along v)"
            )
        } else {
            format!(
                "{TARGETS} lie on the boundary of {hull}: {head}, so meeting them would need \
                 infinite coefficients (all weight on the samples that maximise v . phi)"
            )
        }))
    }

    /// The error for targets that the dual value certifies as jointly unattainable.
    fn below_bound(&self, lambda: &[f64], value: f64) -> Error {
        let norm = lambda.iter().map(|v| v * v).sum::<f64>().sqrt();
        let direction: Vec<String> = lambda.iter().map(|v| format!("{:.3}", v / norm)).collect();
        invalid(format!(
            "{TARGETS} cannot be met together on these samples: each target lies inside its own \
             feature's range, but the target vector is outside the convex hull of the feature \
             vectors of the samples with nonzero weight{}. The coefficients diverge (|lambda| = \
             {norm:.3e}, direction [{}]) and the dual objective fell to {value:.6} below {:.6}, \
             a bound that every attainable target respects",
            if self.data.contexts() == 1 {
                ""
            } else {
                " (averaged over the contexts)"
            },
            direction.join(", "),
            self.data.lower_bound
        ))
    }
}

/// The Newton direction `-H^{-1} g` by Cholesky; when `H` is not numerically positive definite,
/// the Levenberg–Marquardt direction `-(H + tau diag H)^{-1} g` for the smallest `tau` in
/// 1e-10..1 that factorises, and as a last resort the diagonally scaled gradient.
fn newton_direction(at: &Eval, k: usize, factor: &mut [f64], damped: &mut [f64], step: &mut [f64]) {
    let h = &at.hessian;
    let solve = |factor: &[f64], step: &mut [f64]| {
        for (s, g) in step.iter_mut().zip(&at.gradient) {
            *s = -g;
        }
        cholesky_solve(factor, k, step);
    };
    if cholesky(h, k, factor, PIVOT).is_ok() {
        solve(factor, step);
        return;
    }
    let floor = (0..k).map(|j| h[j * k + j]).fold(0.0f64, f64::max) * 1e-12;
    let mut tau = 1e-10;
    while tau <= 1.0 {
        damped.copy_from_slice(h);
        for j in 0..k {
            damped[j * k + j] += tau * h[j * k + j].max(floor);
        }
        if cholesky(damped, k, factor, PIVOT * 1e-3).is_ok() {
            solve(factor, step);
            return;
        }
        tau *= 100.0;
    }
    for j in 0..k {
        step[j] = -at.gradient[j] / h[j * k + j].max(floor).max(f64::MIN_POSITIVE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logit(p: f64) -> f64 {
        (p / (1.0 - p)).ln()
    }

    fn problem<'a>(features: &'a [f64], cols: usize, targets: &'a [f64]) -> Problem<'a> {
        Problem {
            features,
            rows: features.len() / cols,
            cols,
            targets,
            log_weights: None,
            groups: None,
        }
    }

    /// Tight enough that the coefficients, not only the moments, are exact to ~1e-10.
    const TIGHT: Options<'static> = Options {
        tolerance: 1e-13,
        max_iterations: DEFAULT_MAX_ITERATIONS,
        initial: None,
    };

    fn message(r: Result<Fit>) -> String {
        r.unwrap_err().to_string()
    }

    /// One boolean feature over an enumerated support {0..4} with a uniform proposal:
    /// `p_lambda(x) ∝ a(x) e^{lambda phi(x)}` has mean `mu` exactly at
    /// `lambda = logit(mu) - logit(base rate)`.
    #[test]
    fn boolean_feature_closed_form() {
        let a = [0.1f64, 0.2, 0.3, 0.15, 0.25];
        let phi = [1.0, 0.0, 1.0, 0.0, 0.0];
        let rate = 0.4;
        let lw: Vec<f64> = a.iter().map(|p| p.ln() - 0.2f64.ln()).collect();
        for mu in [0.01, 0.2, 0.4, 0.7, 0.999] {
            let targets = [mu];
            let p = Problem {
                log_weights: Some(&lw),
                ..problem(&phi, 1, &targets)
            };
            let fit = fit(&p, &TIGHT).unwrap();
            let want = logit(mu) - logit(rate);
            assert!(
                (fit.coefficients[0] - want).abs() < 1e-9,
                "mu={mu}: {fit:?} vs {want}"
            );
            assert!(fit.max_error < 1e-13 && (fit.moments[0] - mu).abs() < 1e-13);
            // The default tolerance bounds the moment error, not the coefficient's.
            let loose = super::fit(&p, &Options::default()).unwrap();
            assert!(loose.max_error < 1e-8 && (loose.moments[0] - mu).abs() < 1e-8);
            assert!(fit.iterations <= 20, "{fit:?}");
            // Z(lambda) = mean_x (a(x)/q(x)) e^{lambda phi(x)} = sum_x a(x) e^{lambda phi(x)}
            let z: f64 = a.iter().zip(&phi).map(|(a, f)| a * (want * f).exp()).sum();
            assert!((fit.log_z - z.ln()).abs() < 1e-9);
            // ESS of p_lambda's normalised weights over the five points.
            let w: Vec<f64> = a
                .iter()
                .zip(&phi)
                .map(|(a, f)| a * (want * f).exp() / z)
                .collect();
            let ess = 1.0 / w.iter().map(|v| v * v).sum::<f64>();
            assert!((fit.ess - ess).abs() < 1e-9 * ess);
        }
    }

    #[test]
    fn zero_weight_samples_do_not_count_except_in_z() {
        // The last sample weighs zero; its feature value is outside the others' range.
        let phi = [1.0, 0.0, 0.0, 0.0, 50.0];
        let lw = [0.0, 0.0, 0.0, 0.0, f64::NEG_INFINITY];
        let targets = [0.5];
        let p = Problem {
            log_weights: Some(&lw),
            ..problem(&phi, 1, &targets)
        };
        let fit = fit(&p, &TIGHT).unwrap();
        assert!((fit.coefficients[0] - (logit(0.5) - logit(0.25))).abs() < 1e-9);
        // Z = (1/5) (e^lambda + 3) = (1/5) * 6 at lambda = ln 3.
        assert!((fit.log_z - (6.0f64 / 5.0).ln()).abs() < 1e-12);
    }

    #[test]
    fn groups_are_normalised_separately() {
        // Context 0: base rate 0.1 (1 of 10); context 1: base rate 0.8 (4 of 5).
        let mut phi = vec![0.0; 15];
        phi[0] = 1.0;
        for v in &mut phi[10..14] {
            *v = 1.0;
        }
        let groups: Vec<i64> = (0..15).map(|i| i64::from(i >= 10)).collect();
        let targets = [0.5];
        let p = Problem {
            groups: Some(&groups),
            ..problem(&phi, 1, &targets)
        };
        let fit = fit(&p, &TIGHT).unwrap();
        let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
        let l = fit.coefficients[0];
        let average = 0.5 * (sigmoid(logit(0.1) + l) + sigmoid(logit(0.8) + l));
        assert!((average - 0.5).abs() < 1e-9, "{fit:?}");
        // Pooling the 15 samples (base rate 5/15) would give another coefficient.
        assert!((l - (logit(0.5) - logit(1.0 / 3.0))).abs() > 0.1);
        // Shuffled contexts give the same answer.
        let order: Vec<usize> = (0..15).map(|i| (i * 7) % 15).collect();
        let phi2: Vec<f64> = order.iter().map(|&i| phi[i]).collect();
        let groups2: Vec<i64> = order.iter().map(|&i| groups[i]).collect();
        let p2 = Problem {
            groups: Some(&groups2),
            ..problem(&phi2, 1, &targets)
        };
        let fit2 = super::fit(&p2, &TIGHT).unwrap();
        assert!((fit2.coefficients[0] - l).abs() < 1e-10);
    }

    #[test]
    fn two_features_meet_their_targets() {
        // Rows (x1, x2) over a grid with a skewed base.
        let mut phi = Vec::new();
        let mut lw = Vec::new();
        for i in 0..6 {
            for j in 0..4 {
                phi.extend([f64::from(i), f64::from(j) * f64::from(j)]);
                lw.push(-0.1 * f64::from(i + j));
            }
        }
        let targets = [3.1, 4.0];
        let p = Problem {
            log_weights: Some(&lw),
            ..problem(&phi, 2, &targets)
        };
        let fit = fit(&p, &Options::default()).unwrap();
        assert!(fit.max_error < 1e-8 && fit.iterations < 20, "{fit:?}");
        // Warm start at the answer takes no step.
        let again = super::fit(
            &p,
            &Options {
                initial: Some(&fit.coefficients),
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(again.iterations, 0);
    }

    #[test]
    fn refuses_bad_input() {
        let phi = [0.0, 1.0, 1.0, 0.0];
        let t = [0.5];
        let base = problem(&phi, 1, &t);
        let opts = Options::default();
        let nan = [0.0, f64::NAN, 1.0, 0.0];
        assert!(message(fit(&problem(&nan, 1, &t), &opts)).contains("features[1, 0] is NaN"));
        let inf = [0.0, f64::INFINITY, 1.0, 0.0];
        assert!(message(fit(&problem(&inf, 1, &t), &opts)).contains("features[1, 0] is +inf"));
        let lw = [0.0, f64::NAN, 0.0, 0.0];
        let m = message(fit(
            &Problem {
                log_weights: Some(&lw),
                ..base
            },
            &opts,
        ));
        assert!(m.contains("log_weights[1] is NaN"), "{m}");
        let lw = [0.0, 0.0, f64::INFINITY, 0.0];
        let m = message(fit(
            &Problem {
                log_weights: Some(&lw),
                ..base
            },
            &opts,
        ));
        assert!(m.contains("log_weights[2] is +inf"), "{m}");
        let lw = [0.0; 3];
        let m = message(fit(
            &Problem {
                log_weights: Some(&lw),
                ..base
            },
            &opts,
        ));
        assert!(
            m.contains("length mismatch") && m.contains("log_weights has 3"),
            "{m}"
        );
        let lw = [f64::NEG_INFINITY; 4];
        let m = message(fit(
            &Problem {
                log_weights: Some(&lw),
                ..base
            },
            &opts,
        ));
        assert!(m.contains("every entry of log_weights is -inf"), "{m}");
        let m = message(fit(&problem(&[], 1, &t), &opts));
        assert!(m.contains("features is empty"), "{m}");
        let m = message(fit(&problem(&phi, 1, &[0.5, 0.5]), &opts));
        assert!(m.contains("target_moments has 2"), "{m}");
        let m = message(fit(&problem(&phi, 1, &[f64::NAN]), &opts));
        assert!(m.contains("target_moments[0] is NaN"), "{m}");
        let m = message(fit(
            &base,
            &Options {
                initial: Some(&[1.0, 2.0]),
                ..opts
            },
        ));
        assert!(m.contains("initial has 2"), "{m}");
        let m = message(fit(
            &base,
            &Options {
                tolerance: 0.0,
                ..opts
            },
        ));
        assert!(m.contains("tolerance"), "{m}");
    }

    #[test]
    fn refuses_bad_groups() {
        let phi = [0.0, 1.0, 1.0, 0.0];
        let t = [0.5];
        let opts = Options::default();
        let g = [0, -1, 0, 0];
        let m = message(fit(
            &Problem {
                groups: Some(&g),
                ..problem(&phi, 1, &t)
            },
            &opts,
        ));
        assert!(m.contains("groups[1] is -1"), "{m}");
        let g = [0, 9, 0, 0];
        let m = message(fit(
            &Problem {
                groups: Some(&g),
                ..problem(&phi, 1, &t)
            },
            &opts,
        ));
        assert!(m.contains("groups[1] is 9"), "{m}");
        let g = [0, 2, 0, 2];
        let m = message(fit(
            &Problem {
                groups: Some(&g),
                ..problem(&phi, 1, &t)
            },
            &opts,
        ));
        assert!(m.contains("context 1 has no samples"), "{m}");
        let g = [0, 1, 0, 1];
        let lw = [0.0, f64::NEG_INFINITY, 0.0, f64::NEG_INFINITY];
        let p = Problem {
            groups: Some(&g),
            log_weights: Some(&lw),
            ..problem(&phi, 1, &t)
        };
        let m = message(fit(&p, &opts));
        assert!(
            m.contains("context 1 has no sample with nonzero weight"),
            "{m}"
        );
    }

    #[test]
    fn refuses_unreachable_targets() {
        let phi = [0.0, 1.0, 1.0, 0.0, 0.5, 0.25];
        let opts = Options::default();
        let m = message(fit(&problem(&phi, 1, &[1.5]), &opts));
        assert!(
            m.contains("target_moments[0] = 1.5 is outside the range [0, 1]"),
            "{m}"
        );
        let m = message(fit(&problem(&phi, 1, &[-0.1]), &opts));
        assert!(m.contains("outside the range [0, 1]"), "{m}");
        let m = message(fit(&problem(&phi, 1, &[1.0]), &opts));
        assert!(m.contains("on the boundary of the range [0, 1]"), "{m}");
        // Only zero-weight samples have the feature: 0.7 is out of reach.
        let lw = [0.0, f64::NEG_INFINITY, f64::NEG_INFINITY, 0.0, 0.0, 0.0];
        let p = Problem {
            log_weights: Some(&lw),
            ..problem(&phi, 1, &[0.7])
        };
        let m = message(fit(&p, &opts));
        assert!(m.contains("outside the range [0, 0.5]"), "{m}");
    }

    #[test]
    fn refuses_constant_and_collinear_features() {
        let opts = Options::default();
        // Column 1 is constant.
        let phi = [0.0, 2.0, 1.0, 2.0, 0.5, 2.0];
        let m = message(fit(&problem(&phi, 2, &[0.5, 2.0]), &opts));
        assert!(
            m.contains("feature 1 is constant") && m.contains("always 2"),
            "{m}"
        );
        // Column 2 = column 0 + 2 column 1 - 1.
        let rows = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.2]];
        let phi: Vec<f64> = rows
            .iter()
            .flat_map(|r| [r[0], r[1], r[0] + 2.0 * r[1] - 1.0])
            .collect();
        let m = message(fit(&problem(&phi, 3, &[0.5, 0.5, 0.5]), &opts));
        assert!(m.contains("features 0, 1 and 2 are collinear"), "{m}");
        // Duplicated column 0 in column 2, column 1 independent.
        let phi: Vec<f64> = rows.iter().flat_map(|r| [r[0], r[1], r[0]]).collect();
        let m = message(fit(&problem(&phi, 3, &[0.5, 0.5, 0.5]), &opts));
        assert!(m.contains("features 0 and 2 are collinear"), "{m}");
    }

    #[test]
    fn refuses_jointly_unreachable_targets() {
        // Samples (1,0), (0,1), (0,0): each feature reaches [0, 1] but x1 + x2 <= 1 always.
        let phi = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let m = message(fit(&problem(&phi, 2, &[0.6, 0.6]), &Options::default()));
        assert!(m.contains("cannot be met together"), "{m}");
        // On the face x1 + x2 = 1: only infinite coefficients reach it.
        let m = message(fit(&problem(&phi, 2, &[0.3, 0.7]), &Options::default()));
        assert!(m.contains("lie on the boundary of the convex hull"), "{m}");
        // Barely outside the hull is caught too.
        let m = message(fit(
            &problem(&phi, 2, &[0.5, 0.500_001]),
            &Options::default(),
        ));
        assert!(m.contains("cannot be met together"), "{m}");
    }

    #[test]
    fn no_convergence_carries_the_last_iterate() {
        let phi = [1.0, 0.0, 0.0, 0.0];
        let err = fit(
            &problem(&phi, 1, &[0.9]),
            &Options {
                max_iterations: 2,
                ..Options::default()
            },
        )
        .unwrap_err();
        match err {
            Error::NoConvergence {
                last,
                iterations,
                max_error,
                message,
            } => {
                assert_eq!(iterations, 2);
                assert!(last[0].is_finite() && last[0] > 0.0);
                assert!(max_error > 1e-8, "{message}");
                assert!(message.contains("did not converge within 2 iterations"));
            }
            other @ Error::InvalidInput(_) => panic!("{other:?}"),
        }
    }

    #[test]
    fn extreme_but_attainable_targets() {
        // A boolean feature with rate 1/2 and a target of 1e-12: lambda ~ -27.6.
        let phi = [1.0, 0.0];
        let fit = fit(
            &problem(&phi, 1, &[1e-12]),
            &Options {
                tolerance: 1e-14,
                ..Options::default()
            },
        )
        .unwrap();
        assert!((fit.coefficients[0] - logit(1e-12)).abs() < 1e-3, "{fit:?}");
        assert!(fit.coefficients[0].is_finite());
    }
}
