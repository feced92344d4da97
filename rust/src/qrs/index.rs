//! The index: sorted log-ratios with blocked prefix and suffix sums, answering any beta in
//! O(log N) (docs/design.md §7.2).

use rayon::prelude::*;

use super::accept::ACCEPT_TASK;
use super::build::{fingerprint, Sorted};
use super::sums::{BlockedSums, Bucket, SplitLog, NO_COMPANION};
use super::{LOG_RATIOS, LOG_WEIGHTS};
use crate::consts::{logaddexp, softplus, LN2};
use crate::error::{check_finite_matrix, invalid, Result};
use crate::vexp;

/// Checks a log-threshold `log β`: it must be finite (`0 < β < inf`).
fn check_log_beta(arg: &str, i: usize, b: f64) -> Result<()> {
    if b.is_finite() {
        Ok(())
    } else {
        Err(invalid(format!(
            "{arg}[{i}] is {b}: log(beta) must be finite (beta > 0 and finite)"
        )))
    }
}

/// QRS quantities at one beta.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// `AR(β) = Z_β / β`.
    pub acceptance_rate: f64,
    /// `log Z_β`.
    pub log_z_beta: f64,
    /// `KL(p‖p_β)` in nats.
    pub kl: f64,
    /// `TV(p, p_β)`.
    pub tv: f64,
    /// `JS(p, p_β)` in nats, or NaN when it was not asked for.
    pub js: f64,
}

/// Where `log β` splits the sorted samples, and the sums that follow from it.
#[derive(Debug, Clone, Copy)]
struct Split {
    /// Samples `[0, k)` are unclipped (`r <= β`, the `-inf` ones included), `[k, n)` clipped.
    k: usize,
    /// `log Σ_{i<k} ω r`.
    s_le: SplitLog,
    /// `log Σ_{i>=k} ω`.
    w_gt: SplitLog,
    /// `log(S_β / S) <= 0`.
    rho: f64,
    /// `log AR(β) = log(S_β / (β W))`.
    log_ar: f64,
    /// True when no sample is clipped: `p_β = p`.
    exact: bool,
}

/// Sorted log-ratios with blocked prefix and suffix sums: answers any beta in O(log N).
///
/// What it holds: the kept log-ratios in ascending order (8 bytes per sample: the one copy the
/// sort needs), their log-weights in the same order when the samples are weighted (8 more),
/// and the block states of the prefix and suffix sums (about 3 % of that). It keeps neither
/// the input nor a permutation: feature moments are gathered from the inputs, given again and
/// checked against a fingerprint.
///
/// Invariant (shift invariance): every sum is taken over `(w_i - w_shift) + (l_i - l_shift)`,
/// with `l_shift` the largest kept log-ratio and `w_shift` the largest log-weight, so its
/// largest terms are about 1 whatever the size of the inputs; the shifts are added back to the
/// logarithms reported (`log Z`, `log β`), and ratios of sums need none.
pub struct QrsIndex {
    /// Log-ratios in ascending order (`-inf` first); samples with zero weight are dropped.
    pub(super) l: Sorted,
    /// Log-weights in the same order (empty when all weights are 1).
    pub(super) w: Vec<f64>,
    /// The largest kept log-ratio, subtracted from every log-ratio in the sums.
    pub(super) l_shift: f64,
    /// The largest log-weight (0 when unweighted), subtracted from every log-weight in the sums.
    pub(super) w_shift: f64,
    /// Number of samples given (zero-weight ones included), for feature matrices.
    pub(super) n_input: usize,
    /// Fingerprint of the inputs, to check those given again for feature moments.
    pub(super) fingerprint: u64,
    /// Number of sorted samples with `l = -inf`.
    pub(super) n_zero: usize,
    /// `Σ_{i<k} ω_i r_i`.
    pub(super) up: BlockedSums,
    /// `Σ_{i>=k} ω_i r_i` and `Σ_{i>=k} ω_i r_i (l_i - l_max) / Σ_{i>=k} ω_i r_i`.
    pub(super) down: BlockedSums,
    /// `Σ_{i>=k} ω_i` (unused when unweighted: it is the count `n - k`).
    pub(super) weights: Option<BlockedSums>,
}

impl QrsIndex {
    /// `log ω_i + log r_i` of sorted sample `i`.
    pub(super) fn log_term(&self, i: usize) -> f64 {
        self.weight(i) + (self.l[i] - self.l_shift)
    }

    /// `log Σ_{i<k} ω_i r_i`.
    fn s_le(&self, k: usize) -> SplitLog {
        self.up.at(k, &|i| self.log_term(i), NO_COMPANION).0
    }

    /// `(log Σ_{i>=k} ω_i r_i, Σ_{i>=k} ω_i r_i (l_i - l_max) / Σ_{i>=k} ω_i r_i)`.
    fn s_gt(&self, k: usize) -> (SplitLog, f64) {
        let l_max = self.max_log_ratio();
        let companion = |i: usize| self.l[i] - l_max;
        self.down.at(k, &|i| self.log_term(i), Some(&companion))
    }

    /// `log Σ_{i>=k} ω_i`.
    fn w_gt(&self, k: usize) -> SplitLog {
        match &self.weights {
            None => SplitLog::of_count(self.l.len() - k.min(self.l.len())),
            Some(sums) => sums.at(k, &|i| self.weight(i), NO_COMPANION).0,
        }
    }

    /// Number of samples given, zero-weight ones included (the rows a feature matrix needs).
    pub fn n_input(&self) -> usize {
        self.n_input
    }

    /// Number of samples with nonzero weight.
    pub fn len(&self) -> usize {
        self.l.len()
    }

    /// Always false: an index holds at least one sample.
    pub fn is_empty(&self) -> bool {
        self.l.is_empty()
    }

    fn s(&self) -> SplitLog {
        self.down.total.0
    }

    fn total_weight(&self) -> SplitLog {
        match &self.weights {
            None => SplitLog::of_count(self.l.len()),
            Some(sums) => sums.total.0,
        }
    }

    /// `log W = log Σ ω`.
    pub fn log_w(&self) -> f64 {
        self.total_weight().value() + self.w_shift
    }

    /// `log Z = log(S / W)`, the (weighted) importance-sampling estimate of the target's normaliser.
    pub fn log_z(&self) -> f64 {
        self.s().minus(self.total_weight(), self.l_shift)
    }

    /// Largest log-ratio: at or above it, `p_β = p` exactly.
    pub fn max_log_ratio(&self) -> f64 {
        self.l[self.l.len() - 1]
    }

    /// Smallest finite log-ratio: at or below it, every sample with `P > 0` is accepted.
    pub fn min_log_ratio(&self) -> f64 {
        self.l[self.n_zero]
    }

    /// Fraction of the weight on samples with `P > 0`: the acceptance rate of any small beta.
    pub fn max_acceptance_rate(&self) -> f64 {
        self.w_gt(self.n_zero).minus(self.total_weight(), 0.0).exp()
    }

    /// `log ω_i - w_shift` of sorted sample `i`.
    pub(super) fn weight(&self, i: usize) -> f64 {
        if self.w.is_empty() {
            0.0
        } else {
            self.w[i] - self.w_shift
        }
    }

    fn split(&self, b: f64) -> Split {
        let n = self.l.len();
        let (s, w) = (self.s(), self.total_weight());
        let k = self.l.partition_point(|&v| v < b);
        // The sums hold e^{l - l_shift}: β enters them as e^{b - l_shift}.
        let bs = b - self.l_shift;
        if k == n {
            let log_ar = s.minus(w, -bs);
            return Split {
                k,
                s_le: s,
                w_gt: SplitLog::ZERO,
                rho: 0.0,
                log_ar,
                exact: true,
            };
        }
        // Samples equal to β count as clipped (min(r, β) = r = β either way). S_β = S_le + β Ω_gt
        // is taken relative to S (for rho) and to β W (for the acceptance rate), so that
        // all-clipped gives exactly AR = Ω_gt / W; when β is the largest ratio, p_β = p exactly.
        let (s_le, w_gt) = (self.s_le(k), self.w_gt(k));
        let exact = self.l[n - 1] <= b;
        let rho = if exact {
            0.0
        } else {
            logaddexp(s_le.minus(s, 0.0), w_gt.minus(s, bs)).min(0.0)
        };
        let log_ar = logaddexp(s_le.minus(w, -bs), w_gt.minus(w, 0.0));
        Split {
            k,
            s_le,
            w_gt,
            rho,
            log_ar,
            exact,
        }
    }

    /// Every quantity at one `log β` (`js` only when asked: it costs O(#clipped)).
    pub fn point(&self, b: f64, js: bool) -> CurvePoint {
        let sp = self.split(b);
        let acceptance_rate = sp.log_ar.exp().min(1.0);
        let log_z_beta = self.log_z() + sp.rho;
        if sp.exact {
            let js = if js { 0.0 } else { f64::NAN };
            return CurvePoint {
                acceptance_rate,
                log_z_beta,
                kl: 0.0,
                tv: 0.0,
                js,
            };
        }
        let s = self.s();
        let bs = b - self.l_shift;
        // KL = Σ_gt p (l - b) + log(S_β / S), with log(S_β/S) = log1p(-d), d = (S_gt - β Ω_gt) / S.
        let (s_gt, tau) = self.s_gt(sp.k);
        let frac_gt = s_gt.minus(s, 0.0).exp();
        let gt_term = frac_gt * (tau + (self.max_log_ratio() - b));
        let d = frac_gt - sp.w_gt.minus(s, bs).exp();
        let log_ratio = if d < 0.5 { (-d).ln_1p() } else { sp.rho };
        let kl = (gt_term + log_ratio).max(0.0);
        // TV = S_{>t}/S - β Ω_{>t}/S_β over the samples where p > p_β: l > log t = b + log(S/S_β).
        // Compared relative to the shift: `b - rho` rounded at the magnitude of b (7e5, say)
        // could cross a log-ratio that the exact threshold does not reach.
        let log_t = bs - sp.rho;
        let k2 = self.l.partition_point(|&v| v - self.l_shift <= log_t);
        let tv = (self.s_gt(k2).0.minus(s, 0.0).exp()
            - (self.w_gt(k2).minus(s, bs) - sp.rho).exp())
        .clamp(0.0, 1.0);
        let js = if js { self.js(b, &sp) } else { f64::NAN };
        CurvePoint {
            acceptance_rate,
            log_z_beta,
            kl,
            tv,
            js,
        }
    }

    fn js(&self, b: f64, sp: &Split) -> f64 {
        let s = self.s();
        // rho = log(S_β / S) <= 0: p_β = e^{-rho} p on the unclipped samples, whose part is
        // Σ_le ½ [p (ln2 - softplus(-rho)) + p_β (ln2 - softplus(rho))].
        let rho = sp.rho;
        let le_frac = sp.s_le.minus(s, 0.0);
        let le = 0.5
            * (le_frac.exp() * (LN2 - softplus(-rho))
                + (le_frac - rho).exp() * (LN2 - softplus(rho)));
        // Clipped part, one term per sample: log p = w + l - log S, log p_β = w + b - log S - rho.
        let minus_log_s = s.subtractor();
        let b_rel = minus_log_s(b - self.l_shift) - rho;
        let term = |i: usize| {
            let wi = self.weight(i);
            let lp = minus_log_s(self.log_term(i));
            let lpb = wi + b_rel;
            let lrho = lpb - lp;
            0.5 * (lp.exp() * (LN2 - softplus(lrho)) + lpb.exp() * (LN2 - softplus(-lrho)))
        };
        let range = sp.k..self.l.len();
        let gt = if range.len() < vexp::PARALLEL_THRESHOLD {
            vexp::compensated_sum(range.map(term))
        } else {
            let idx: Vec<usize> = range.collect();
            let partials: Vec<f64> = idx
                .par_chunks(ACCEPT_TASK)
                .map(|c| vexp::compensated_sum(c.iter().map(|&i| term(i))))
                .collect();
            vexp::compensated_sum(partials)
        };
        (le + gt).clamp(0.0, LN2)
    }

    /// The curve at every `log β` (validated), in parallel.
    pub fn curve(&self, log_betas: &[f64], js: bool) -> Result<Vec<CurvePoint>> {
        for (i, &b) in log_betas.iter().enumerate() {
            check_log_beta("log_betas", i, b)?;
        }
        Ok(log_betas.par_iter().map(|&b| self.point(b, js)).collect())
    }

    /// Moments under `p_β` of the columns of a row-major `n_input x k` feature matrix (rows in
    /// the order the samples were given), at every `log β`; returns a row-major `B x k` matrix.
    /// `log_ratios` and `log_weights` must be the arrays the index was built from (checked).
    ///
    /// `E_{p_β}[f] = π μ_le + (1 - π) μ_gt` with `π = S_le / S_β`, `μ_le` the `p`-mean of `f` over
    /// the unclipped samples (`l < log β`) and `μ_gt` the weight-mean over the clipped ones. One
    /// pass over the samples in their given order puts each into the bucket between two
    /// consecutive sorted `log β` (binary search), with compensated sums per bucket in their own
    /// binary unit; prefix and suffix sums over the buckets then give every beta. O(N (K +
    /// log B)) time and O(B K) memory: no permutation of the samples is needed.
    pub fn feature_moments(
        &self,
        log_ratios: &[f64],
        log_weights: Option<&[f64]>,
        features: &[f64],
        k: usize,
        log_betas: &[f64],
    ) -> Result<Vec<f64>> {
        let weighted = !self.w.is_empty();
        let same_inputs = log_ratios.len() == self.n_input
            && !matches!(log_weights, Some(w) if w.len() != self.n_input)
            && fingerprint(log_ratios, log_weights.filter(|_| weighted)) == self.fingerprint;
        if !same_inputs {
            return Err(invalid(format!(
                "{LOG_RATIOS} (or {LOG_WEIGHTS}) differ from those the index was built from: \
                 they were changed since, or are other arrays"
            )));
        }
        if k == 0 || features.len() != self.n_input * k {
            return Err(invalid(format!(
                "length mismatch: {LOG_RATIOS} has {} values but features has {} rows of {k}",
                self.n_input,
                features.len().checked_div(k).unwrap_or(0)
            )));
        }
        check_finite_matrix("features", features, k)?;
        for (i, &b) in log_betas.iter().enumerate() {
            check_log_beta("log_betas", i, b)?;
        }
        let splits: Vec<Split> = log_betas.iter().map(|&b| self.split(b)).collect();
        let mut thresholds: Vec<f64> = log_betas.to_vec();
        thresholds.sort_unstable_by(f64::total_cmp);
        let buckets = thresholds.len() + 1;
        // Bucket j holds the samples with thresholds[j - 1] <= l < thresholds[j]: unclipped
        // (in the prefix) for every beta from the j-th on, clipped for the ones before.
        let mut up = vec![Bucket::new(k); buckets];
        let mut down = vec![Bucket::new(k); buckets];
        let weight = |o: usize| {
            log_weights
                .filter(|_| weighted)
                .map_or(0.0, |w| w[o] - self.w_shift)
        };
        for (o, &l) in log_ratios.iter().enumerate() {
            let wo = weight(o);
            if wo == f64::NEG_INFINITY {
                continue;
            }
            let row = &features[o * k..(o + 1) * k];
            let j = thresholds.partition_point(|&t| t <= l);
            if l > f64::NEG_INFINITY {
                up[j].add(wo + (l - self.l_shift), row);
            }
            down[j].add(wo, row);
        }
        // Prefix over buckets 0..=j (unclipped at the j-th threshold), suffix over j+1.. (clipped).
        let mut mu_le = vec![0.0; buckets * k];
        let mut acc = Bucket::new(k);
        for (j, bucket) in up.iter().enumerate() {
            acc.merge(bucket);
            acc.mean_into(&mut mu_le[j * k..(j + 1) * k]);
        }
        let mut mu_gt = vec![0.0; buckets * k];
        let mut acc = Bucket::new(k);
        for j in (0..buckets - 1).rev() {
            acc.merge(&down[j + 1]);
            acc.mean_into(&mut mu_gt[j * k..(j + 1) * k]);
        }

        let n = self.l.len();
        let s = self.s();
        let mut out = vec![0.0; splits.len() * k];
        for (q, (sp, &b)) in splits.iter().zip(log_betas).enumerate() {
            let j = thresholds.partition_point(|&t| t < b);
            let pi = if sp.k == n {
                1.0
            } else {
                (sp.s_le.minus(s, 0.0) - sp.rho).exp().min(1.0)
            };
            for c in 0..k {
                out[q * k + c] = pi * mu_le[j * k + c] + (1.0 - pi) * mu_gt[j * k + c];
            }
        }
        Ok(out)
    }

    /// The `log β` whose acceptance rate is `rate`, solved in closed form on the segment of the
    /// sorted ratios that holds it (found by binary search): O(log² N).
    ///
    /// On the segment where the first k samples are unclipped, `AR(β) = (S_le/β + Ω_gt)/W`, so
    /// `β = S_le / (rate W - Ω_gt)`; above the largest ratio `β = S / (rate W)`. A rate equal to
    /// the largest achievable one ([`Self::max_acceptance_rate`]) gives the smallest finite ratio.
    pub fn log_beta_for_acceptance_rate(&self, rate: f64) -> Result<f64> {
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(invalid(format!(
                "rate is {rate}: an acceptance rate must lie in (0, 1]"
            )));
        }
        let n = self.l.len();
        let ar_at = |j: usize| self.split(self.l[j]).log_ar.exp();
        let top = self.max_acceptance_rate();
        if (rate - top).abs() <= 1e-14 * top {
            return Ok(self.min_log_ratio());
        }
        if rate > top {
            return Err(invalid(format!(
                "rate is {rate}: no beta accepts more than {top}, the share of the weight on \
                 samples where the target is nonzero"
            )));
        }
        // Largest j in [n_zero, n) with AR(r_j) >= rate (AR is non-increasing in j).
        let (mut lo, mut hi) = (self.n_zero, n);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if ar_at(mid) >= rate {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let lj = self.l[lo];
        let k = self.l.partition_point(|&v| v <= lj);
        let w = self.total_weight();
        if k == n {
            return Ok(self.s().minus(w, self.l_shift - rate.ln()).max(lj));
        }
        let gap = rate - self.w_gt(k).minus(w, 0.0).exp();
        let b = self.s_le(k).minus(w, self.l_shift - gap.ln());
        Ok(if b.is_nan() {
            lj
        } else {
            b.clamp(lj, self.l[k])
        })
    }
}
