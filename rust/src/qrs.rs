//! Quasi-Rejection Sampling (DESIGN §6): the accept/reject decision, whole beta trade-off curves
//! from one sort, the beta that gives a target acceptance rate, and the independent
//! Metropolis–Hastings chain QRS is compared against.
//!
//! Samples `x_i ~ q` carry log-ratios `l_i = log P_i - log q_i` (`-inf` where `P = 0`) and,
//! optionally, log-weights `w_i` (samples not drawn from `q`: an enumerated support weighted by
//! `q`, stratified draws); a mean is then `Σ e^{w_i} g_i / Σ e^{w_i}`. With `r_i = e^{l_i}`,
//! `S = Σ ω r`, `S_β = Σ ω min(r, β)`, `W = Σ ω`, `p_i = ω_i r_i / S`, `p_β,i = ω_i min(r_i, β) / S_β`:
//!
//! - `Z_β = S_β / W`, acceptance rate `AR(β) = Z_β / β`;
//! - `KL(p‖p_β) = Σ_{r>β} p_i (l_i - log β) + log(S_β / S)`;
//! - `TV(p, p_β) = Σ_{p > p_β} (p_i - p_β,i) = S_{>t} / S - β Ω_{>t} / S_β` with `t = β S / S_β`;
//! - `JS(p, p_β)`, the standard one in nats (its clipped part has no prefix-sum form, so it costs
//!   O(#{r > β}) per beta);
//! - a feature's moment under `p_β`: `Σ ω min(r, β) f / S_β`.
//!
//! After one sort by `l`, every sum above splits at the position of `log β` into a prefix (the
//! unclipped samples, `r <= β`) and a suffix (the clipped ones), so B betas over N samples cost
//! O(N log N + B log N). Prefix sums run upwards from the smallest ratio and suffix sums downwards
//! from the largest, each kept with Neumaier compensation in a binary scale that follows the
//! magnitude of its terms ([`Scale`]): a sum of ratios spanning hundreds of orders of magnitude
//! keeps its relative precision at every split, and no term is ever exponentiated unshifted.

use rayon::prelude::*;

use crate::error::{check_finite_matrix, check_log_scores, check_same_length, invalid, Result};
use crate::vexp::{self, neumaier_add};

const LN2: f64 = std::f64::consts::LN_2;
/// ln 2 split so that `k * LN2_HI` is exact for |k| < 2^11 (Cody–Waite), as in `vexp`.
const LN2_HI: f64 = 0.693_147_180_369_123_8;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
/// A running sum is rescaled once a term exceeds `2^RESCALE_BITS` of its current unit.
const RESCALE_BITS: i32 = 512;
/// Elements per parallel task in the accept/reject kernel.
const ACCEPT_TASK: usize = 1 << 15;

/// `log(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// `log(e^a + e^b)`, exact for `-inf` operands.
fn logaddexp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// `2^d` as an exact power of two (0 below the normal range, where it is negligible here).
fn pow2(d: i32) -> f64 {
    if d < -1022 {
        0.0
    } else {
        f64::from_bits(((1023 + d) as u64) << 52)
    }
}

/// The binary unit `2^exp` of a family of running sums.
///
/// Invariant: every sum kept in this unit has absolute value at most `N · 2^RESCALE_BITS`, so it
/// neither overflows nor loses the relative precision of its largest terms; rescaling multiplies
/// by an exact power of two, which keeps the Neumaier compensation valid.
#[derive(Clone, Copy, Debug)]
struct Scale {
    exp: i32,
    started: bool,
}

impl Scale {
    fn new() -> Self {
        Scale {
            exp: 0,
            started: false,
        }
    }

    /// Makes room for a term `e^{log_term}`; returns the factor the running sums must be multiplied by.
    fn admit(&mut self, log_term: f64) -> f64 {
        let e = (log_term / LN2).floor().clamp(-1e6, 1e6) as i32;
        if !self.started {
            self.started = true;
            self.exp = e;
            return 1.0;
        }
        if e > self.exp + RESCALE_BITS {
            let factor = pow2(self.exp - e);
            self.exp = e;
            return factor;
        }
        1.0
    }

    /// `e^{log_term}` in this unit.
    fn units(self, log_term: f64) -> f64 {
        let e = f64::from(self.exp);
        ((log_term - e * LN2_HI) - e * LN2_LO).exp()
    }
}

/// A logarithm kept as `e · ln 2 + lm`, with an integer `e` and `lm ∈ [-ln 2, 0)`.
///
/// Differences of two such logs (or of one and a float) are formed with the large parts
/// cancelling exactly (`e · LN2_HI` is exact for |e| < 2^11), so a sum of size `e^{-800}` keeps
/// the relative precision that a plain f64 logarithm (ulp ≈ 1e-13 at 800) would lose.
#[derive(Clone, Copy, Debug, PartialEq)]
struct SplitLog {
    e: i32,
    lm: f64,
}

impl SplitLog {
    /// The log of zero.
    const ZERO: SplitLog = SplitLog {
        e: 0,
        lm: f64::NEG_INFINITY,
    };

    /// `log(value · 2^exp)` for `value >= 0`.
    fn from_scaled(value: f64, exp: i32) -> Self {
        if value.is_nan() || value <= 0.0 {
            return Self::ZERO;
        }
        let (v, adjust) = if value < f64::MIN_POSITIVE {
            (value * pow2(64), -64)
        } else {
            (value, 0)
        };
        let bits = v.to_bits();
        let e2 = ((bits >> 52) & 0x7ff) as i32 - 1022;
        // Invariant: with the exponent field set to 1022 the mantissa reads as a value in [0.5, 1).
        let frac = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
        SplitLog {
            e: exp + e2 + adjust,
            lm: frac.ln(),
        }
    }

    fn is_zero(self) -> bool {
        self.lm == f64::NEG_INFINITY
    }

    /// The logarithm as one float.
    fn value(self) -> f64 {
        if self.is_zero() {
            return f64::NEG_INFINITY;
        }
        f64::from(self.e) * LN2 + self.lm
    }

    /// `log self - log other + shift`.
    fn minus(self, other: SplitLog, shift: f64) -> f64 {
        if self.is_zero() {
            return f64::NEG_INFINITY;
        }
        if other.is_zero() {
            return f64::INFINITY;
        }
        let de = f64::from(self.e - other.e);
        ((de * LN2_HI + shift) + de * LN2_LO) + (self.lm - other.lm)
    }

    /// `x - log self` for a float `x`.
    fn subtracted_from(self, x: f64) -> f64 {
        let e = f64::from(self.e);
        ((x - e * LN2_HI) - e * LN2_LO) - self.lm
    }
}

fn scale_pair(acc: &mut (f64, f64), factor: f64) {
    acc.0 *= factor;
    acc.1 *= factor;
}

fn total(acc: (f64, f64)) -> f64 {
    acc.0 + acc.1
}

/// Name of the log-ratio argument in error messages.
pub const LOG_RATIOS: &str = "log_ratios";
/// Name of the log-weight argument in error messages.
pub const LOG_WEIGHTS: &str = "log_weights";

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

// ---------------------------------------------------------------------------------------------
// Accept / reject
// ---------------------------------------------------------------------------------------------

/// The QRS decision: sample `i` is accepted iff `log u_i < min(0, l_i - log β)`, i.e. with
/// probability `min(1, P_i / (β q_i))`. `uniforms` are `u_i ∈ [0, 1)`, or `log u_i ∈ [-inf, 0)`
/// when `log_uniforms`. A sample with `l_i = -inf` is never accepted.
pub fn accept(
    log_ratios: &[f64],
    uniforms: &[f64],
    log_beta: f64,
    log_uniforms: bool,
) -> Result<Vec<bool>> {
    let u_arg = if log_uniforms {
        "log_uniforms"
    } else {
        "uniforms"
    };
    check_same_length(&[(LOG_RATIOS, log_ratios.len()), (u_arg, uniforms.len())])?;
    if !log_beta.is_finite() {
        return Err(invalid(format!(
            "log_beta is {log_beta}: log(beta) must be finite (beta > 0 and finite)"
        )));
    }
    let bad_u = |u: f64| {
        if log_uniforms {
            u.is_nan() || u >= 0.0
        } else {
            !(0.0..1.0).contains(&u)
        }
    };
    let decide = |l: &[f64], u: &[f64], out: &mut [bool]| -> bool {
        let mut bad = false;
        if log_uniforms {
            for ((o, &li), &ui) in out.iter_mut().zip(l).zip(u) {
                bad |= li.is_nan() || li == f64::INFINITY || bad_u(ui);
                *o = ui < (li - log_beta).min(0.0);
            }
        } else {
            for ((o, &li), &ui) in out.iter_mut().zip(l).zip(u) {
                bad |= li.is_nan() || li == f64::INFINITY || bad_u(ui);
                // exp of a non-positive argument; exp_nonpos(0) is exactly 1 and u < 1.
                *o = ui < vexp::exp_nonpos((li - log_beta).min(0.0));
            }
        }
        bad
    };
    let mut out = vec![false; log_ratios.len()];
    let bad = if log_ratios.len() < vexp::PARALLEL_THRESHOLD {
        decide(log_ratios, uniforms, &mut out)
    } else {
        out.par_chunks_mut(ACCEPT_TASK)
            .zip(
                log_ratios
                    .par_chunks(ACCEPT_TASK)
                    .zip(uniforms.par_chunks(ACCEPT_TASK)),
            )
            .map(|(o, (l, u))| decide(l, u, o))
            .reduce(|| false, |a, b| a | b)
    };
    if bad {
        check_log_scores(LOG_RATIOS, log_ratios)?;
        let (i, u) = uniforms
            .iter()
            .enumerate()
            .find(|(_, &u)| bad_u(u))
            .expect("a bad uniform was seen");
        let range = if log_uniforms { "[-inf, 0)" } else { "[0, 1)" };
        return Err(invalid(format!(
            "{u_arg}[{i}] is {u}: it must lie in {range}"
        )));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Independent Metropolis–Hastings
// ---------------------------------------------------------------------------------------------

/// One run of an independent Metropolis–Hastings chain over a batch of proposals.
#[derive(Debug, Clone, PartialEq)]
pub struct ImhRun {
    /// For each step, the index of the proposal the chain sits on afterwards, `-1` for the state
    /// it started from.
    pub states: Vec<i64>,
    /// For each step, whether the proposal was accepted (the chain moved).
    pub accepted: Vec<bool>,
    /// The log-ratio of the final state.
    pub final_log_ratio: f64,
}

/// Runs the chain: from a state with log-ratio `current`, proposal `t` (log-ratio `l_t`, drawn
/// independently from `q`) is accepted iff `log u_t < l_t - l_current`, i.e. with probability
/// `min(1, r_t / r_current)`. A chain standing on a zero-probability state (`current = -inf`,
/// which is how a fresh chain starts) accepts any proposal, so it leaves that state at once.
pub fn imh_chain(
    log_ratios: &[f64],
    uniforms: &[f64],
    log_uniforms: bool,
    current: f64,
) -> Result<ImhRun> {
    let u_arg = if log_uniforms {
        "log_uniforms"
    } else {
        "uniforms"
    };
    check_same_length(&[(LOG_RATIOS, log_ratios.len()), (u_arg, uniforms.len())])?;
    check_log_scores(LOG_RATIOS, log_ratios)?;
    if current.is_nan() || current == f64::INFINITY {
        return Err(invalid(format!(
            "current_log_ratio is {current}: it must be finite or -inf"
        )));
    }
    for (i, &u) in uniforms.iter().enumerate() {
        let ok = if log_uniforms {
            u < 0.0
        } else {
            (0.0..1.0).contains(&u)
        };
        if !ok {
            let range = if log_uniforms { "[-inf, 0)" } else { "[0, 1)" };
            return Err(invalid(format!(
                "{u_arg}[{i}] is {u}: it must lie in {range}"
            )));
        }
    }
    let mut states = Vec::with_capacity(log_ratios.len());
    let mut accepted = Vec::with_capacity(log_ratios.len());
    let mut state: i64 = -1;
    let mut cur = current;
    for (t, (&l, &u)) in log_ratios.iter().zip(uniforms).enumerate() {
        let log_u = if log_uniforms { u } else { u.ln() };
        let take = cur == f64::NEG_INFINITY || log_u < l - cur;
        if take {
            state = t as i64;
            cur = l;
        }
        states.push(state);
        accepted.push(take);
    }
    Ok(ImhRun {
        states,
        accepted,
        final_log_ratio: cur,
    })
}

// ---------------------------------------------------------------------------------------------
// Curves
// ---------------------------------------------------------------------------------------------

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
    /// `log(S_β / S) <= 0`.
    rho: f64,
    /// `log AR(β) = log(S_β / (β W))`.
    log_ar: f64,
    /// True when no sample is clipped: `p_β = p`.
    exact: bool,
}

/// Sorted log-ratios with prefix and suffix sums: answers any beta in O(log N).
#[derive(Debug, Clone)]
pub struct QrsIndex {
    /// Log-ratios in ascending order (`-inf` first); samples with zero weight are dropped.
    l: Vec<f64>,
    /// Log-weights in the same order (empty when all weights are 1).
    w: Vec<f64>,
    /// Original position of each sorted sample.
    order: Vec<usize>,
    /// Number of samples given (zero-weight ones included), for feature matrices.
    n_input: usize,
    /// Number of sorted samples with `l = -inf`.
    n_zero: usize,
    /// `log Σ_{i<k} ω_i r_i`, for k = 0..=n.
    s_le: Vec<SplitLog>,
    /// `log Σ_{i>=k} ω_i r_i`, for k = 0..=n.
    s_gt: Vec<SplitLog>,
    /// `log Σ_{i>=k} ω_i`, for k = 0..=n.
    w_gt: Vec<SplitLog>,
    /// `Σ_{i>=k} ω_i r_i (l_i - l_max) / Σ_{i>=k} ω_i r_i` (0 when that sum is 0), for k = 0..=n.
    tau_gt: Vec<f64>,
}

impl QrsIndex {
    /// Sorts the samples and builds the prefix and suffix sums.
    pub fn new(log_ratios: &[f64], log_weights: Option<&[f64]>) -> Result<Self> {
        check_log_scores(LOG_RATIOS, log_ratios)?;
        if let Some(w) = log_weights {
            check_same_length(&[(LOG_RATIOS, log_ratios.len()), (LOG_WEIGHTS, w.len())])?;
            check_log_scores(LOG_WEIGHTS, w)?;
        }
        if log_ratios.is_empty() {
            return Err(invalid(format!(
                "{LOG_RATIOS} is empty: at least one sample is needed"
            )));
        }
        let mut pairs: Vec<(f64, usize)> = match log_weights {
            None => log_ratios.iter().copied().zip(0..).collect(),
            Some(w) => log_ratios
                .iter()
                .copied()
                .zip(0..)
                .filter(|&(_, i)| w[i] > f64::NEG_INFINITY)
                .collect(),
        };
        if pairs.is_empty() {
            return Err(invalid(format!(
                "every entry of {LOG_WEIGHTS} is -inf: samples that all weigh zero define no mean"
            )));
        }
        pairs.par_sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let n = pairs.len();
        let l: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        let order: Vec<usize> = pairs.iter().map(|p| p.1).collect();
        drop(pairs);
        let w: Vec<f64> = match log_weights {
            Some(lw) if lw.iter().any(|&v| v != 0.0) => order.iter().map(|&i| lw[i]).collect(),
            _ => Vec::new(),
        };
        let n_zero = l.partition_point(|&v| v == f64::NEG_INFINITY);
        if n_zero == n {
            return Err(invalid(format!(
                "every entry of {LOG_RATIOS} with nonzero weight is -inf: the target gives zero \
                 weight to all samples, so no beta trade-off can be estimated from them"
            )));
        }
        let l_max = l[n - 1];
        let wt = |i: usize| if w.is_empty() { 0.0 } else { w[i] };

        // Upward pass: Σ_{i<k} ω r.
        let mut s_le = vec![SplitLog::ZERO; n + 1];
        let mut scale = Scale::new();
        let mut s = (0.0, 0.0);
        for i in n_zero..n {
            let a = wt(i) + l[i];
            scale_pair(&mut s, scale.admit(a));
            neumaier_add(&mut s, scale.units(a));
            s_le[i + 1] = SplitLog::from_scaled(total(s), scale.exp);
        }

        // Downward pass: Σ_{i>=k} ω r, Σ_{i>=k} ω r (l - l_max), Σ_{i>=k} ω.
        let mut s_gt = vec![SplitLog::ZERO; n + 1];
        let mut w_gt = vec![SplitLog::ZERO; n + 1];
        let mut tau_gt = vec![0.0; n + 1];
        let (mut s_scale, mut w_scale) = (Scale::new(), Scale::new());
        let (mut s, mut t, mut om) = ((0.0, 0.0), (0.0, 0.0), (0.0, 0.0));
        for i in (0..n).rev() {
            let wi = wt(i);
            let f = w_scale.admit(wi);
            scale_pair(&mut om, f);
            neumaier_add(&mut om, w_scale.units(wi));
            w_gt[i] = SplitLog::from_scaled(total(om), w_scale.exp);
            if i >= n_zero {
                let a = wi + l[i];
                let f = s_scale.admit(a);
                scale_pair(&mut s, f);
                scale_pair(&mut t, f);
                let term = s_scale.units(a);
                neumaier_add(&mut s, term);
                neumaier_add(&mut t, term * (l[i] - l_max));
                s_gt[i] = SplitLog::from_scaled(total(s), s_scale.exp);
                tau_gt[i] = total(t) / total(s);
            } else {
                s_gt[i] = s_gt[i + 1];
                tau_gt[i] = tau_gt[i + 1];
            }
        }
        Ok(QrsIndex {
            l,
            w,
            order,
            n_input: log_weights.map_or(log_ratios.len(), <[f64]>::len),
            n_zero,
            s_le,
            s_gt,
            w_gt,
            tau_gt,
        })
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
        self.s_gt[0]
    }

    fn total_weight(&self) -> SplitLog {
        self.w_gt[0]
    }

    /// `log W = log Σ ω`.
    pub fn log_w(&self) -> f64 {
        self.total_weight().value()
    }

    /// `log Z = log(S / W)`, the (weighted) importance-sampling estimate of the target's normaliser.
    pub fn log_z(&self) -> f64 {
        self.s().minus(self.total_weight(), 0.0)
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
        self.w_gt[self.n_zero].minus(self.total_weight(), 0.0).exp()
    }

    fn weight(&self, i: usize) -> f64 {
        if self.w.is_empty() {
            0.0
        } else {
            self.w[i]
        }
    }

    fn split(&self, b: f64) -> Split {
        let n = self.l.len();
        let (s, w) = (self.s(), self.total_weight());
        if self.l.partition_point(|&v| v <= b) == n {
            return Split {
                k: n,
                rho: 0.0,
                log_ar: s.minus(w, -b),
                exact: true,
            };
        }
        let k = self.l.partition_point(|&v| v < b);
        // S_β = S_le + β Ω_gt, taken relative to S (for rho) and to β W (for the acceptance rate),
        // so that all-clipped gives exactly AR = Ω_gt / W.
        let rho = logaddexp(self.s_le[k].minus(s, 0.0), self.w_gt[k].minus(s, b)).min(0.0);
        let log_ar = logaddexp(self.s_le[k].minus(w, -b), self.w_gt[k].minus(w, 0.0));
        Split {
            k,
            rho,
            log_ar,
            exact: false,
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
        let k = sp.k;
        // KL = Σ_gt p (l - b) + log(S_β / S), with log(S_β/S) = log1p(-d), d = (S_gt - β Ω_gt) / S.
        let frac_gt = self.s_gt[k].minus(s, 0.0).exp();
        let gt_term = frac_gt * (self.tau_gt[k] + (self.max_log_ratio() - b));
        let d = frac_gt - self.w_gt[k].minus(s, b).exp();
        let log_ratio = if d < 0.5 { (-d).ln_1p() } else { sp.rho };
        let kl = (gt_term + log_ratio).max(0.0);
        // TV = S_{>t}/S - β Ω_{>t}/S_β over the samples where p > p_β: l > log t = b + log(S/S_β).
        let log_t = b - sp.rho;
        let k2 = self.l.partition_point(|&v| v <= log_t);
        let tv = (self.s_gt[k2].minus(s, 0.0).exp() - (self.w_gt[k2].minus(s, b) - sp.rho).exp())
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
        let rho = sp.rho; // log(S_β / S) <= 0: p_β = e^{-rho} p on the unclipped samples
                          // Unclipped part: Σ_le ½ [p (ln2 - softplus(-rho)) + p_β (ln2 - softplus(rho))].
        let le_frac = self.s_le[sp.k].minus(s, 0.0);
        let le = 0.5
            * (le_frac.exp() * (LN2 - softplus(-rho))
                + (le_frac - rho).exp() * (LN2 - softplus(rho)));
        // Clipped part, one term per sample: log p = w + l - log S, log p_β = w + b - log S - rho.
        let b_rel = s.subtracted_from(b) - rho;
        let term = |i: usize| {
            let wi = self.weight(i);
            let lp = s.subtracted_from(wi + self.l[i]);
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
    ///
    /// `E_{p_β}[f] = π μ_le + (1 - π) μ_gt` with `π = S_le / S_β`, `μ_le` the `p`-mean of `f` over
    /// the unclipped samples and `μ_gt` the weight-mean over the clipped ones; both are gathered
    /// in one upward and one downward pass over the samples, O(N K + B log N) in all.
    pub fn feature_moments(
        &self,
        features: &[f64],
        k: usize,
        log_betas: &[f64],
    ) -> Result<Vec<f64>> {
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
        let n = self.l.len();
        let splits: Vec<Split> = log_betas.iter().map(|&b| self.split(b)).collect();
        let mut by_k: Vec<usize> = (0..splits.len()).collect();
        by_k.sort_unstable_by_key(|&q| splits[q].k);
        let row = |i: usize| &features[self.order[i] * k..(self.order[i] + 1) * k];

        // Upward: μ_le(k) = Σ_{i<k} ω r f / Σ_{i<k} ω r.
        let mut mu_le = vec![0.0; splits.len() * k];
        let mut scale = Scale::new();
        let mut s = (0.0, 0.0);
        let mut g = vec![(0.0, 0.0); k];
        let mut next = 0;
        for i in 0..=n {
            while next < by_k.len() && splits[by_k[next]].k == i {
                let q = by_k[next];
                let st = total(s);
                if st > 0.0 {
                    for (m, acc) in mu_le[q * k..(q + 1) * k].iter_mut().zip(&g) {
                        *m = total(*acc) / st;
                    }
                }
                next += 1;
            }
            if i == n || i < self.n_zero {
                continue;
            }
            let a = self.weight(i) + self.l[i];
            let f = scale.admit(a);
            scale_pair(&mut s, f);
            for acc in &mut g {
                scale_pair(acc, f);
            }
            let term = scale.units(a);
            neumaier_add(&mut s, term);
            for (acc, &fv) in g.iter_mut().zip(row(i)) {
                neumaier_add(acc, term * fv);
            }
        }

        // Downward: μ_gt(k) = Σ_{i>=k} ω f / Σ_{i>=k} ω.
        let mut mu_gt = vec![0.0; splits.len() * k];
        let mut scale = Scale::new();
        let mut om = (0.0, 0.0);
        let mut h = vec![(0.0, 0.0); k];
        let mut next = by_k.len();
        for i in (0..=n).rev() {
            if i < n {
                let wi = self.weight(i);
                let f = scale.admit(wi);
                scale_pair(&mut om, f);
                for acc in &mut h {
                    scale_pair(acc, f);
                }
                let term = scale.units(wi);
                neumaier_add(&mut om, term);
                for (acc, &fv) in h.iter_mut().zip(row(i)) {
                    neumaier_add(acc, term * fv);
                }
            }
            while next > 0 && splits[by_k[next - 1]].k == i {
                let q = by_k[next - 1];
                let ot = total(om);
                if ot > 0.0 {
                    for (m, acc) in mu_gt[q * k..(q + 1) * k].iter_mut().zip(&h) {
                        *m = total(*acc) / ot;
                    }
                }
                next -= 1;
            }
        }

        let s = self.s();
        let mut out = vec![0.0; splits.len() * k];
        for (q, sp) in splits.iter().enumerate() {
            let pi = if sp.exact {
                1.0
            } else {
                (self.s_le[sp.k].minus(s, 0.0) - sp.rho).exp().min(1.0)
            };
            for j in 0..k {
                out[q * k + j] = pi * mu_le[q * k + j] + (1.0 - pi) * mu_gt[q * k + j];
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
            return Ok(self.s().minus(w, -rate.ln()).max(lj));
        }
        let gap = rate - self.w_gt[k].minus(w, 0.0).exp();
        let b = self.s_le[k].minus(w, -gap.ln());
        Ok(if b.is_nan() {
            lj
        } else {
            b.clamp(lj, self.l[k])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute-force O(N) evaluation of the definitions, in plain f64.
    fn brute(l: &[f64], w: &[f64], b: f64) -> (f64, f64, f64, f64, f64) {
        let omega: Vec<f64> = w.iter().map(|v| v.exp()).collect();
        let r: Vec<f64> = l.iter().map(|v| v.exp()).collect();
        let wt: f64 = omega.iter().sum();
        let s: f64 = omega.iter().zip(&r).map(|(o, r)| o * r).sum();
        let beta = b.exp();
        let sb: f64 = omega.iter().zip(&r).map(|(o, r)| o * r.min(beta)).sum();
        let ar = sb / beta / wt;
        let (mut kl, mut tv, mut js) = (0.0, 0.0, 0.0);
        for i in 0..l.len() {
            let p = omega[i] * r[i] / s;
            let pb = omega[i] * r[i].min(beta) / sb;
            if p > 0.0 {
                kl += p * (p / pb).ln();
                js += 0.5 * p * (2.0 * p / (p + pb)).ln();
            }
            if pb > 0.0 {
                js += 0.5 * pb * (2.0 * pb / (p + pb)).ln();
            }
            tv += 0.5 * (p - pb).abs();
        }
        (ar, (sb / wt).ln(), kl, tv, js)
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn matches_brute_force_with_ties_zeros_and_weights() {
        let l = [0.3, -1.0, f64::NEG_INFINITY, 2.0, 0.3, 2.0, -0.5, 1.1];
        let w = [0.0, -0.2, 0.1, -1.0, 0.5, 0.0, f64::NEG_INFINITY, 0.3];
        let idx = QrsIndex::new(&l, Some(&w)).unwrap();
        let (lk, wk): (Vec<f64>, Vec<f64>) = l
            .iter()
            .zip(&w)
            .filter(|(_, w)| **w > f64::NEG_INFINITY)
            .map(|(a, b)| (*a, *b))
            .unzip();
        for b in [-3.0, -1.0, -0.2, 0.3, 0.31, 1.1, 1.5, 2.0, 2.5] {
            let p = idx.point(b, true);
            let (ar, lzb, kl, tv, js) = brute(&lk, &wk, b);
            assert!(
                close(p.acceptance_rate, ar, 1e-13),
                "ar at {b}: {} vs {ar}",
                p.acceptance_rate
            );
            assert!(close(p.log_z_beta, lzb, 1e-13), "log_z_beta at {b}");
            assert!(close(p.kl, kl, 1e-13), "kl at {b}: {} vs {kl}", p.kl);
            assert!(close(p.tv, tv, 1e-13), "tv at {b}: {} vs {tv}", p.tv);
            assert!(close(p.js, js, 1e-13), "js at {b}: {} vs {js}", p.js);
        }
    }

    #[test]
    fn exact_limits() {
        let l = [0.0, 1.0, -2.0, 0.5];
        let idx = QrsIndex::new(&l, None).unwrap();
        let top = idx.point(1.0, true);
        assert_eq!((top.kl, top.tv, top.js), (0.0, 0.0, 0.0));
        assert_eq!(idx.point(-2.0, false).acceptance_rate, 1.0);
        assert_eq!(idx.point(-50.0, false).acceptance_rate, 1.0);
        let with_zero = QrsIndex::new(&[0.0, f64::NEG_INFINITY], None).unwrap();
        assert_eq!(with_zero.point(-5.0, false).acceptance_rate, 0.5);
        assert_eq!(with_zero.max_acceptance_rate(), 0.5);
    }

    #[test]
    fn huge_ratio_ranges_keep_relative_precision() {
        // Ratios e^{-800} and e^{0}: at β = e^{-800} half the weight is accepted with certainty
        // and the other half with probability 1, so AR = 1.
        let idx = QrsIndex::new(&[-800.0, 0.0], None).unwrap();
        assert!((idx.point(-800.0, false).acceptance_rate - 1.0).abs() < 1e-15);
        let ar = idx.point(-799.0, false).acceptance_rate;
        assert!((ar - 0.5 * (1.0 + (-1.0f64).exp())).abs() < 1e-14, "{ar}");
        let idx = QrsIndex::new(&[900.0, 1000.0, 1000.0], None).unwrap();
        assert!(
            (idx.log_z() - (1000.0 + (2.0 / 3.0f64).ln() + (1.0 + 0.5 * (-100.0f64).exp()).ln()))
                .abs()
                < 1e-12
        );
    }

    #[test]
    fn beta_for_rate_round_trips() {
        let l = [0.3, -1.0, 2.0, 0.3, 2.0, -0.5, 1.1, f64::NEG_INFINITY];
        let idx = QrsIndex::new(&l, None).unwrap();
        for rate in [0.875, 0.8, 0.6, 0.5, 0.3, 0.1, 1e-3] {
            let b = idx.log_beta_for_acceptance_rate(rate).unwrap();
            let got = idx.point(b, false).acceptance_rate;
            assert!(
                (got - rate).abs() < 1e-13 * rate.max(1e-300) + 1e-15,
                "{rate}: {got}"
            );
        }
        assert!((idx.log_beta_for_acceptance_rate(0.875).unwrap() + 1.0).abs() < 1e-14);
        assert!(idx.log_beta_for_acceptance_rate(0.9).is_err());
        assert!(idx.log_beta_for_acceptance_rate(0.0).is_err());
    }

    #[test]
    fn moments_match_brute_force() {
        let l = [0.3, -1.0, f64::NEG_INFINITY, 2.0, 0.3];
        let f = [1.0, 2.0, -1.0, 0.5, 3.0, 0.0, 4.0, 1.0, -2.0, 2.5];
        let idx = QrsIndex::new(&l, None).unwrap();
        let betas = [-2.0, 0.3, 1.0, 2.0, 5.0];
        let m = idx.feature_moments(&f, 2, &betas).unwrap();
        for (q, &b) in betas.iter().enumerate() {
            let beta = b.exp();
            let wts: Vec<f64> = l.iter().map(|v| v.exp().min(beta)).collect();
            let z: f64 = wts.iter().sum();
            for j in 0..2 {
                let want: f64 = wts
                    .iter()
                    .enumerate()
                    .map(|(i, w)| w * f[i * 2 + j])
                    .sum::<f64>()
                    / z;
                assert!(
                    close(m[q * 2 + j], want, 1e-14),
                    "beta {b} feature {j}: {} vs {want}",
                    m[q * 2 + j]
                );
            }
        }
    }

    #[test]
    fn accept_rule_and_errors() {
        let l = [0.0, -1.0, f64::NEG_INFINITY, 3.0];
        let u = [0.99, 0.5, 0.0, 0.999];
        assert_eq!(
            accept(&l, &u, 0.0, false).unwrap(),
            vec![true, false, false, true]
        );
        let lu: Vec<f64> = u.iter().map(|v| v.ln()).collect();
        assert_eq!(
            accept(&l, &lu, 0.0, true).unwrap(),
            vec![true, false, false, true]
        );
        assert!(accept(&l, &[0.5, 0.5, 1.0, 0.5], 0.0, false)
            .unwrap_err()
            .to_string()
            .contains("uniforms[2]"));
        assert!(accept(&[f64::NAN], &[0.5], 0.0, false)
            .unwrap_err()
            .to_string()
            .contains("log_ratios[0] is NaN"));
        assert!(accept(&[0.0], &[0.5], f64::NAN, false).is_err());
        assert!(accept(&[0.0], &[0.5, 0.1], 0.0, false).is_err());
    }

    #[test]
    fn imh_moves_by_ratio() {
        let run = imh_chain(
            &[0.0, -1.0, 1.0, f64::NEG_INFINITY],
            &[0.9, 0.5, 0.99, 0.0],
            false,
            f64::NEG_INFINITY,
        )
        .unwrap();
        // Step 0 leaves the -inf start; step 1 proposes ratio e^-1 ≈ 0.37 < 0.5: stay; step 2 moves up.
        assert_eq!(run.states, vec![0, 0, 2, 2]);
        assert_eq!(run.accepted, vec![true, false, true, false]);
        assert_eq!(run.final_log_ratio, 1.0);
    }
}
