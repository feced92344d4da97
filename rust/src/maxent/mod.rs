//! Maximum-entropy coefficients: the damped Newton solver for `lambda` (docs/design.md §3).
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
//! - The prepared columns are the only array of size N (one copy of the input); the scores
//!   `s = lw + X lambda` and weights `e^{s - max}` are recomputed block by block in each pass
//!   (a few multiply-adds per feature), so an iteration allocates nothing of size N.
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

mod newton;
mod passes;
mod prepare;
#[cfg(test)]
mod tests;

use crate::error::Result;
use crate::vexp;
use newton::Solver;
use prepare::Prepared;

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

/// Fits `lambda` by damped Newton with an Armijo backtracking line search (docs/design.md §3.2).
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
