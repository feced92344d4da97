//! The kept samples, grouped by context and centred on the targets, and the checks that run
//! before the Newton loop: shapes and values, attainable ranges, collinear features.

use super::passes::{covariance_sums, moment_sums};
use super::{
    cholesky, list, mean, Options, Problem, COLLINEAR, FEATURES, GROUPS, INITIAL, LOG_WEIGHTS,
    TARGETS,
};
use crate::error::{
    check_finite, check_finite_matrix, check_log_scores, check_non_empty, invalid, Message, Result,
};

/// The kept samples, grouped by context, as centred columns.
pub(super) struct Prepared {
    pub(super) k: usize,
    /// Kept samples (nonzero weight).
    pub(super) m: usize,
    /// `x_ik = phi_ik - mu_bar_k`, column `k` at `cols[k * m..(k + 1) * m]`, grouped by context.
    pub(super) cols: Vec<f64>,
    /// Finite log-weights of the kept samples, in the same order; empty when none were given
    /// (all zero), so that no buffer of N zeros is held.
    pub(super) lw: Vec<f64>,
    /// Context `c` holds kept samples `offsets[c]..offsets[c + 1]`.
    pub(super) offsets: Vec<usize>,
    /// `log n_c`, with `n_c` counting every sample of context `c` (zero weights included).
    pub(super) log_counts: Vec<f64>,
    pub(super) targets: Vec<f64>,
    /// `(min, max)` of feature `j` over the kept samples of context `c` at `ranges[c * k + j]`.
    pub(super) ranges: Vec<(f64, f64)>,
    /// `max(|mu_bar_k|, max_i |phi_ik|)` per feature: the scale of the rounding in `x_ik`, used
    /// by [`Solver::hull_certificate`].
    pub(super) col_scale: Vec<f64>,
    /// The range `mean_c max_{i in c} phi_ik - mean_c min_{i in c} phi_ik` of each feature,
    /// the unit of the tolerance (positive once [`Prepared::check_ranges`] has passed).
    pub(super) widths: Vec<f64>,
    /// The dual's lower bound over attainable targets, `mean_c [min_{i in c} lw_i - log n_c]`.
    pub(super) lower_bound: f64,
}

impl Prepared {
    pub(super) fn new(p: &Problem<'_>, o: &Options<'_>) -> Result<Self> {
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

    pub(super) fn contexts(&self) -> usize {
        self.log_counts.len()
    }

    pub(super) fn span(&self, c: usize) -> std::ops::Range<usize> {
        self.offsets[c]..self.offsets[c + 1]
    }

    /// "on the samples" or "within each context", for messages.
    pub(super) fn scope(&self) -> &'static str {
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
    pub(super) fn check_ranges(&self) -> Result<()> {
        let k = self.k;
        for (j, &mu) in self.targets.iter().enumerate() {
            // With one context these are the exact extremes, compared exactly with the target.
            let lo = mean((0..self.contexts()).map(|c| self.ranges[c * k + j].0));
            let hi = mean((0..self.contexts()).map(|c| self.ranges[c * k + j].1));
            let constant = (0..self.contexts()).all(|c| {
                let (a, b) = self.ranges[c * k + j];
                a == b
            });
            // "... that feature j" or "... that the average over the C contexts of feature j".
            let that_feature = |before: String| {
                let average = if self.contexts() == 1 {
                    String::new()
                } else {
                    format!("the average over the {} contexts of ", self.contexts())
                };
                Message::default()
                    .entry(TARGETS, j)
                    .then(format!("{before}{average}"))
                    .feature(j)
            };
            if constant {
                let value = self.ranges[j].0;
                return Err(invalid(Message::default().feature(j).then(format!(
                    " is constant {}{}: its coefficient is not identified (its covariance is \
                     zero); drop it",
                    self.scope(),
                    if self.contexts() == 1 {
                        format!(" (always {value})")
                    } else {
                        String::new()
                    }
                ))));
            }
            let range = format!("[{lo}, {hi}]");
            if mu < lo || mu > hi {
                return Err(invalid(
                    that_feature(format!(" = {mu} is outside the range {range} that ")).then(
                        " takes on the samples with nonzero weight: no reweighting of these \
                         samples can reach it",
                    ),
                ));
            }
            if mu == lo || mu == hi {
                return Err(invalid(
                    that_feature(format!(
                        " = {mu} is on the boundary of the range {range} that "
                    ))
                    .then(
                        " takes on the samples with nonzero weight: meeting it would need an \
                             infinite coefficient (all weight on the samples at that extreme)",
                    ),
                ));
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
    pub(super) fn check_collinear(&self) -> Result<()> {
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
            let head = Message::text(format!(
                "features {} are collinear {}: ",
                list(&involved),
                self.scope()
            ))
            .feature(j)
            .then(" is an affine function of ");
            let of = if involved.len() == 2 {
                head.feature(involved[0])
            } else {
                head.then(format!(
                    "features {}",
                    list(&involved[..involved.len() - 1])
                ))
            };
            return Err(invalid(of.then(format!(
                " (up to a residual below {COLLINEAR:e} of its variance), so the feature \
                 covariance is singular and their coefficients are not identified; drop or merge \
                 one of them"
            ))));
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
