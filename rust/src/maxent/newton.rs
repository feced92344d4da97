//! The damped Newton solver on the sample dual, with its line search and the certificates of
//! targets that no finite coefficients reach.

use super::passes::{
    blocked_sums, covariance_sums, lane_sum, log_sum_from_parts, moment_sums, score_range,
    scores_into,
};
use super::prepare::Prepared;
use super::{
    cholesky, cholesky_solve, Fit, Options, ARMIJO, INITIAL, MAX_HALVINGS, MAX_LOG_RATIO_CHANGE,
    PIVOT, TARGETS,
};
use crate::consts::BLOCK;
use crate::error::{invalid, Error, Result};
use crate::vexp;

/// The dual at one point: value, gradient, Hessian and ESS.
pub(super) struct Eval {
    /// `L(lambda)` (with the centred features, the `- lambda . mu_bar` term is inside).
    pub(super) value: f64,
    /// Rounding scale of `value`: `|L| + mean_c |max_i s_i|`.
    pub(super) magnitude: f64,
    /// `mean_c E_c[x]` = moments minus targets.
    pub(super) gradient: Vec<f64>,
    /// `mean_c Cov_c[x]`, lower triangle, row-major `k x k`.
    pub(super) hessian: Vec<f64>,
    pub(super) ess: f64,
}

pub(super) struct Solver<'a> {
    pub(super) data: &'a Prepared,
    /// Per-context means, scratch.
    pub(super) means: Vec<f64>,
    /// `k` ones: the Hessian's sums are taken in the features' own units.
    pub(super) ones: Vec<f64>,
    /// Compensated accumulators for the sums of one context, scratch.
    pub(super) acc: Vec<(f64, f64)>,
}

impl<'a> Solver<'a> {
    pub(super) fn new(data: &'a Prepared) -> Self {
        let k = data.k;
        Self {
            data,
            means: vec![0.0; k],
            ones: vec![1.0; k],
            acc: vec![(0.0, 0.0); (k + 4).max(k * (k + 1) / 2)],
        }
    }

    /// The largest score `lw_i + lambda . x_i` of context `c`, or `None` if any overflowed.
    pub(super) fn max_score(&self, lambda: &[f64], c: usize) -> Option<f64> {
        let (_, max, bad) = score_range(self.data, c, lambda, true, false);
        (!bad).then_some(max)
    }

    /// `(L(lambda), rounding scale)`, or `None` where the scores overflow.
    ///
    /// Memory: the scores and weights are recomputed block by block in each pass (a few
    /// multiply-adds per feature), so a pass holds one block, never an array of size N.
    pub(super) fn value(&mut self, lambda: &[f64]) -> Option<(f64, f64)> {
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
    pub(super) fn evaluate(&mut self, lambda: &[f64], out: &mut Eval) -> Option<()> {
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

    /// Damped Newton from `options.initial` (or zero) until every moment is within tolerance:
    /// evaluate, stop when converged, refuse targets proven unattainable, take a Newton (or
    /// scaled-gradient) direction and a backtracking line search along it.
    pub(super) fn run(mut self, options: &Options<'_>) -> Result<Fit> {
        let k = self.data.k;
        let mut lambda = options
            .initial
            .map_or_else(|| vec![0.0; k], <[f64]>::to_vec);
        let mut trial = vec![0.0; k];
        let mut step = vec![0.0; k];
        let (mut factor, mut damped) = (vec![0.0; k * k], vec![0.0; k * k]);
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
            self.evaluate_finite(&lambda, &mut at, iterations)?;
            let (worst, max_error) = largest_error(&at);
            if self.converged(&at, options.tolerance) {
                return Ok(self.fit(lambda, iterations, &at, max_error));
            }
            self.refuse_unattainable(&lambda, &taken, &at, iterations)?;
            if iterations >= options.max_iterations {
                return Err(Error::NoConvergence {
                    message: format!(
                        "fit_coefficients did not converge within {} iterations: the largest \
                         moment error is {max_error:e} (feature {worst}, whose range on the samples is \
                         {:e}) against a tolerance of {:e} of the range; raise max_iterations or the tolerance, or start from the last \
                         coefficients",
                        options.max_iterations, self.data.widths[worst], options.tolerance
                    ),
                    last: lambda,
                    iterations,
                    max_error,
                });
            }
            newton_direction(&at, k, &mut factor, &mut damped, &mut step);
            let slope = descent_slope(&at, k, &mut step);
            if !self.line_search(&lambda, &step, slope, &at, &mut trial) {
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

    /// [`Self::evaluate`], refusing coefficients at which the weights overflow.
    fn evaluate_finite(&mut self, lambda: &[f64], at: &mut Eval, iterations: usize) -> Result<()> {
        if self.evaluate(lambda, at).is_some() {
            return Ok(());
        }
        Err(invalid(format!(
            "the weights overflow at the {} coefficients {lambda:?}: {} are too large for these \
             features",
            if iterations == 0 {
                "initial"
            } else {
                "current"
            },
            if iterations == 0 { INITIAL } else { "they" }
        )))
    }

    /// Every moment error below `tolerance` times its feature's range on the samples (so a
    /// feature and the same feature times 1e-8 are fitted alike; for a 0/1 feature, absolute).
    fn converged(&self, at: &Eval, tolerance: f64) -> bool {
        (at.gradient.iter().zip(&self.data.widths)).all(|(g, w)| g.abs() < tolerance * w)
    }

    /// The result at the converged `lambda`.
    fn fit(&self, lambda: Vec<f64>, iterations: usize, at: &Eval, max_error: f64) -> Fit {
        let d = self.data;
        let moments = (at.gradient.iter().zip(&d.targets))
            .map(|(g, mu)| mu + g)
            .collect();
        let shift = vexp::compensated_sum(lambda.iter().zip(&d.targets).map(|(l, mu)| l * mu));
        Fit {
            coefficients: lambda,
            iterations,
            moments,
            max_error,
            ess: at.ess,
            log_z: at.value + shift,
        }
    }

    /// Refuses targets the iterates prove unattainable: a hull certificate along the
    /// coefficients or the last step, or a dual value below the bound attainable targets respect.
    fn refuse_unattainable(
        &mut self,
        lambda: &[f64],
        taken: &[f64],
        at: &Eval,
        iterations: usize,
    ) -> Result<()> {
        if iterations > 0 {
            for direction in [lambda, taken] {
                if let Some(err) = self.hull_certificate(direction) {
                    return Err(err);
                }
            }
        }
        let bound = self.data.lower_bound;
        if at.value < bound - 1e-9 * (1.0 + bound.abs()) {
            return Err(self.below_bound(lambda, at.value));
        }
        Ok(())
    }

    /// Backtracking (Armijo) from the capped step along `step`; the accepted point is left in
    /// `trial`. The Armijo test has a slack for the rounding of `L`, so that a Newton step near
    /// the optimum, whose decrease is below what `L` can resolve, is still taken.
    fn line_search(
        &mut self,
        lambda: &[f64],
        step: &[f64],
        slope: f64,
        at: &Eval,
        trial: &mut [f64],
    ) -> bool {
        let slack = 64.0 * f64::EPSILON * at.magnitude;
        let mut t = self.step_cap(step);
        for _ in 0..=MAX_HALVINGS {
            for ((x, l), s) in trial.iter_mut().zip(lambda).zip(step) {
                *x = l + t * s;
            }
            if trial.iter().all(|v| v.is_finite()) {
                if let Some((value, _)) = self.value(trial) {
                    if value <= at.value + ARMIJO * t * slope + slack {
                        return true;
                    }
                }
            }
            t *= 0.5;
        }
        false
    }

    /// `(min, max)` of `dir . x_i` over context `c`.
    pub(super) fn project(&mut self, dir: &[f64], c: usize) -> (f64, f64) {
        let (lo, hi, _) = score_range(self.data, c, dir, false, true);
        (lo, hi)
    }

    /// The largest step along `dir` that changes no log-weight ratio by more than
    /// [`MAX_LOG_RATIO_CHANGE`]: `MAX / (max_i dir . x_i - min_i dir . x_i)`, at most 1.
    pub(super) fn step_cap(&mut self, dir: &[f64]) -> f64 {
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
    pub(super) fn hull_certificate(&mut self, dir: &[f64]) -> Option<Error> {
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
    pub(super) fn below_bound(&self, lambda: &[f64], value: f64) -> Error {
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

/// `(index, |error|)` of the largest moment error.
fn largest_error(at: &Eval) -> (usize, f64) {
    at.gradient
        .iter()
        .enumerate()
        .fold(
            (0, 0.0f64),
            |(w, m), (j, g)| {
                if g.abs() > m {
                    (j, g.abs())
                } else {
                    (w, m)
                }
            },
        )
}

/// The slope `g . step` of a descent direction: when rounding made the Newton direction
/// useless (`g . step >= 0`), `step` becomes steepest descent scaled by the Hessian's diagonal.
fn descent_slope(at: &Eval, k: usize, step: &mut [f64]) -> f64 {
    let slope = |step: &[f64]| {
        at.gradient
            .iter()
            .zip(step)
            .map(|(g, s)| g * s)
            .sum::<f64>()
    };
    let newton = slope(step);
    if newton < 0.0 {
        return newton;
    }
    for (j, (s, g)) in step.iter_mut().zip(&at.gradient).enumerate() {
        *s = -g / at.hessian[j * k + j].max(f64::MIN_POSITIVE);
    }
    slope(step)
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
