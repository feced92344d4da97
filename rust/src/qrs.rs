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

use crate::consts::{logaddexp, softplus, LN2, LN2_HI, LN2_LO};
use crate::dispatch::with_avx2;
use crate::error::{check_finite_matrix, check_log_scores, check_same_length, invalid, Result};
use crate::vexp::{self, neumaier_add};

/// A running sum is rescaled once a term exceeds `2^RESCALE_BITS` of its current unit.
const RESCALE_BITS: i32 = 512;
/// Elements per parallel task in the accept/reject kernel.
const ACCEPT_TASK: usize = 1 << 15;

/// `2^d` as an exact power of two (0 below the normal range, where it is negligible here).
fn pow2(d: i32) -> f64 {
    if d < -1022 {
        0.0
    } else {
        f64::from_bits(((1023 + d) as u64) << 52)
    }
}

/// Largest binary exponent of a sum's unit, either way: `2^(±2^30)` spans ±7.4e8 nats.
///
/// The index shifts its terms so that the largest is about 0 (see [`QrsIndex`]), so only a term
/// more than 7.4e8 nats below the largest ever meets the clamp, and `e^{-7.4e8}` of the largest
/// is zero to every precision kept here.
const MAX_UNIT_EXP: f64 = 1_073_741_824.0;

/// `floor(log_term / ln 2)`, clamped to ±[`MAX_UNIT_EXP`] (`-inf` gives the lowest).
fn binary_exponent(log_term: f64) -> i32 {
    (log_term / LN2).floor().clamp(-MAX_UNIT_EXP, MAX_UNIT_EXP) as i32
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
        let e = binary_exponent(log_term);
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

    /// Sets the unit to the binary magnitude of `log_term` (at or above the current one);
    /// returns the factor the running sums must be multiplied by.
    fn admit_floor(&mut self, log_term: f64) -> f64 {
        let e = binary_exponent(log_term);
        let factor = if self.started {
            pow2(self.exp - e)
        } else {
            1.0
        };
        self.started = true;
        self.exp = e;
        factor
    }

    /// `e^{log_term}` in this unit.
    fn units(self, log_term: f64) -> f64 {
        let e = f64::from(self.exp);
        ((log_term - e * LN2_HI) - e * LN2_LO).exp()
    }
}

/// A logarithm kept as `e · ln 2 + ln m`, with an integer `e` and a mantissa `m ∈ [0.5, 1)`
/// (`m = 0` for the log of zero).
///
/// Differences of two such logs (or of one and a float) are formed with the large parts
/// cancelling exactly (`e · LN2_HI` is exact for |e| < 2^11), so a sum of size `e^{-800}` keeps
/// the relative precision that a plain f64 logarithm (ulp ≈ 1e-13 at 800) would lose. Taking
/// the snapshot is a few bit operations; the `ln` is paid per query, not per sample.
#[derive(Clone, Copy, Debug, PartialEq)]
struct SplitLog {
    e: i32,
    m: f64,
}

impl SplitLog {
    /// The log of zero.
    const ZERO: SplitLog = SplitLog { e: 0, m: 0.0 };

    /// `log(value · 2^exp)` for `value >= 0`.
    #[inline]
    fn from_scaled(value: f64, exp: i32) -> Self {
        if value.is_nan() || value <= 0.0 {
            return Self::ZERO;
        }
        // Invariant: `exp` is a clamped unit exponent (|exp| <= 2^30), so `e` stays in i32.
        let (v, adjust) = if value < f64::MIN_POSITIVE {
            (value * pow2(64), -64)
        } else {
            (value, 0)
        };
        let bits = v.to_bits();
        let e2 = ((bits >> 52) & 0x7ff) as i32 - 1022;
        // Invariant: with the exponent field set to 1022 the mantissa reads as a value in [0.5, 1).
        let m = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
        SplitLog {
            e: exp + e2 + adjust,
            m,
        }
    }

    /// `log n` for a count (exact mantissa).
    fn of_count(n: usize) -> Self {
        Self::from_scaled(n as f64, 0)
    }

    fn is_zero(self) -> bool {
        self.m == 0.0
    }

    /// The logarithm as one float.
    fn value(self) -> f64 {
        if self.is_zero() {
            return f64::NEG_INFINITY;
        }
        f64::from(self.e) * LN2 + self.m.ln()
    }

    /// `log self - log other + shift`.
    fn minus(self, other: SplitLog, shift: f64) -> f64 {
        if self.is_zero() {
            return f64::NEG_INFINITY;
        }
        if other.is_zero() {
            return f64::INFINITY;
        }
        // In f64: the difference of two i32 exponents is exact there and cannot overflow.
        let de = f64::from(self.e) - f64::from(other.e);
        ((de * LN2_HI + shift) + de * LN2_LO) + (self.m / other.m).ln()
    }

    /// A function computing `x - log self` for floats `x`, with `ln m` taken once.
    fn subtractor(self) -> impl Fn(f64) -> f64 + Sync {
        let e = f64::from(self.e);
        let (hi, lo, lm) = (e * LN2_HI, e * LN2_LO, self.m.ln());
        move |x| ((x - hi) - lo) - lm
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

/// Invariant: the loop body has no branch (bitwise `&` on the validity tests), so it vectorises;
/// it returns true when some input was invalid, and the caller then names it.
#[inline(always)]
#[allow(clippy::needless_bitwise_bool, clippy::manual_range_contains)]
fn decide_uniform_body(l: &[f64], u: &[f64], log_beta: f64, out: &mut [bool]) -> bool {
    let mut ok = true;
    for ((o, &li), &ui) in out.iter_mut().zip(l).zip(u) {
        ok &= (li < f64::INFINITY) & (ui >= 0.0) & (ui < 1.0);
        // exp of a non-positive argument; exp_nonpos(0) is exactly 1 and u < 1.
        *o = ui < vexp::exp_nonpos((li - log_beta).min(0.0));
    }
    !ok
}

/// As [`decide_uniform_body`], with `log u` given.
#[inline(always)]
#[allow(clippy::needless_bitwise_bool)]
fn decide_log_body(l: &[f64], u: &[f64], log_beta: f64, out: &mut [bool]) -> bool {
    let mut ok = true;
    for ((o, &li), &ui) in out.iter_mut().zip(l).zip(u) {
        ok &= (li < f64::INFINITY) & (ui < 0.0);
        *o = ui < (li - log_beta).min(0.0);
    }
    !ok
}

with_avx2!(decide_uniform, decide_uniform_body);
with_avx2!(decide_log, decide_log_body);

/// What the uniform draws given to [`accept`] and [`imh_chain`] hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniforms {
    /// `u_i ∈ [0, 1)`.
    Plain,
    /// `log u_i ∈ [-inf, 0)` (from a generator of exponential variates, say).
    Log,
}

impl Uniforms {
    /// The argument's name in error messages.
    pub fn arg(self) -> &'static str {
        match self {
            Uniforms::Plain => "uniforms",
            Uniforms::Log => "log_uniforms",
        }
    }

    fn range(self) -> &'static str {
        match self {
            Uniforms::Plain => "[0, 1)",
            Uniforms::Log => "[-inf, 0)",
        }
    }

    fn is_valid(self, u: f64) -> bool {
        match self {
            Uniforms::Plain => (0.0..1.0).contains(&u),
            Uniforms::Log => u < 0.0,
        }
    }

    /// `log u`.
    fn log(self, u: f64) -> f64 {
        match self {
            Uniforms::Plain => u.ln(),
            Uniforms::Log => u,
        }
    }

    /// The error for the first invalid draw, if any.
    fn check(self, uniforms: &[f64]) -> Result<()> {
        match uniforms.iter().position(|&u| !self.is_valid(u)) {
            None => Ok(()),
            Some(i) => Err(invalid(format!(
                "{}[{i}] is {:?}: it must lie in {}",
                self.arg(),
                uniforms[i],
                self.range()
            ))),
        }
    }
}

/// The QRS decision: sample `i` is accepted iff `log u_i < min(0, l_i - log β)`, i.e. with
/// probability `min(1, P_i / (β q_i))`. `uniforms` hold `u_i` or `log u_i` as `kind` says. A
/// sample with `l_i = -inf` is never accepted.
pub fn accept(
    log_ratios: &[f64],
    uniforms: &[f64],
    log_beta: f64,
    kind: Uniforms,
) -> Result<Vec<bool>> {
    check_same_length(&[(LOG_RATIOS, log_ratios.len()), (kind.arg(), uniforms.len())])?;
    if !log_beta.is_finite() {
        return Err(invalid(format!(
            "log_beta is {log_beta}: log(beta) must be finite (beta > 0 and finite)"
        )));
    }
    let decide = |l: &[f64], u: &[f64], out: &mut [bool]| -> bool {
        match kind {
            Uniforms::Log => decide_log(l, u, log_beta, out),
            Uniforms::Plain => decide_uniform(l, u, log_beta, out),
        }
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
        kind.check(uniforms)?;
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
    kind: Uniforms,
    current: f64,
) -> Result<ImhRun> {
    check_same_length(&[(LOG_RATIOS, log_ratios.len()), (kind.arg(), uniforms.len())])?;
    check_log_scores(LOG_RATIOS, log_ratios)?;
    if current.is_nan() || current == f64::INFINITY {
        return Err(invalid(format!(
            "current_log_ratio is {current}: it must be finite or -inf"
        )));
    }
    kind.check(uniforms)?;
    let mut states = Vec::with_capacity(log_ratios.len());
    let mut accepted = Vec::with_capacity(log_ratios.len());
    let mut state: i64 = -1;
    let mut cur = current;
    for (t, (&l, &u)) in log_ratios.iter().zip(uniforms).enumerate() {
        let log_u = kind.log(u);
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

/// Running compensated sums `s = Σ e^{a_i}` and `g = Σ e^{a_i} c_i` in one binary unit.
#[derive(Debug, Clone, Copy)]
struct Sums {
    scale: Scale,
    s: (f64, f64),
    g: (f64, f64),
}

impl Sums {
    fn new() -> Self {
        Sums {
            scale: Scale::new(),
            s: (0.0, 0.0),
            g: (0.0, 0.0),
        }
    }

    fn rescale(&mut self, factor: f64) {
        scale_pair(&mut self.s, factor);
        scale_pair(&mut self.g, factor);
    }
}

/// Prefix (upward from `start`) or suffix (downward from the end) sums over the sorted samples,
/// run in blocks of [`TERM_BLOCK`] with the state saved before each block. Any prefix or suffix
/// sum is then the saved state plus part of one block, recomputed exactly as in the full pass:
/// O(N / TERM_BLOCK) memory and O(TERM_BLOCK) per query.
#[derive(Debug, Clone)]
struct BlockedSums {
    start: usize,
    n: usize,
    up: bool,
    saved: Vec<Sums>,
    /// `(log s, g / s)` over everything.
    total: (SplitLog, f64),
}

impl BlockedSums {
    fn blocks(start: usize, n: usize) -> usize {
        (n - start).div_ceil(TERM_BLOCK)
    }

    /// Sample range `[i0, i1)` of block `j`.
    fn range(&self, j: usize) -> (usize, usize) {
        if self.up {
            let i0 = self.start + j * TERM_BLOCK;
            (i0, (i0 + TERM_BLOCK).min(self.n))
        } else {
            let i1 = self.n - j * TERM_BLOCK;
            (i1.saturating_sub(TERM_BLOCK).max(self.start), i1)
        }
    }

    fn build<A, C>(n: usize, start: usize, up: bool, log_term: &A, companion: Option<&C>) -> Self
    where
        A: Fn(usize) -> f64,
        C: Fn(usize) -> f64,
    {
        let mut this = BlockedSums {
            start,
            n,
            up,
            saved: Vec::new(),
            total: (SplitLog::ZERO, 0.0),
        };
        let mut sums = Sums::new();
        for j in 0..Self::blocks(start, n) {
            this.saved.push(sums);
            this.run_block(j, &mut sums, log_term, companion, None);
        }
        this.total = snapshot(&sums, sums.scale.exp);
        this
    }

    /// Runs block `j` from `sums`; with `stop = Some(i)`, returns the sums right after sample
    /// `i` is added (upward: over `[start, i]`; downward: over `[i, n)`).
    fn run_block<A, C>(
        &self,
        j: usize,
        sums: &mut Sums,
        log_term: &A,
        companion: Option<&C>,
        stop: Option<usize>,
    ) -> (SplitLog, f64)
    where
        A: Fn(usize) -> f64,
        C: Fn(usize) -> f64,
    {
        let (i0, i1) = self.range(j);
        let len = i1 - i0;
        let mut a = [0.0; TERM_BLOCK];
        for (x, i) in a.iter_mut().zip(i0..i1) {
            *x = log_term(i);
        }
        let (mut x, mut t, mut f) = ([0.0; TERM_BLOCK], [0.0; TERM_BLOCK], [0.0; TERM_BLOCK]);
        let mut ex = [0i32; TERM_BLOCK];
        let unit = block_terms(
            &mut sums.scale,
            &a[..len],
            !self.up,
            &mut x,
            &mut t,
            &mut f,
            &mut ex,
        );
        if let BlockUnit::Uniform { pre, exp } = unit {
            sums.rescale(pre);
            if stop.is_none() {
                // Building: only the state after the block is kept, so add the block's total.
                neumaier_add(&mut sums.s, vexp::lane_sum(&t[..len], |v| v));
                if let Some(c) = companion {
                    for (xj, i) in x.iter_mut().zip(i0..i1) {
                        *xj = c(i);
                    }
                    neumaier_add(
                        &mut sums.g,
                        vexp::lane_sum_zip(&t[..len], &x[..len], |a, b| a * b),
                    );
                }
                return (SplitLog::ZERO, 0.0);
            }
            f[..len].fill(1.0);
            ex[..len].fill(exp);
        }
        let step = |jj: usize, sums: &mut Sums| -> Option<(SplitLog, f64)> {
            if f[jj] != 1.0 {
                sums.rescale(f[jj]);
            }
            neumaier_add(&mut sums.s, t[jj]);
            if let Some(c) = companion {
                if t[jj] != 0.0 {
                    neumaier_add(&mut sums.g, t[jj] * c(i0 + jj));
                }
            }
            (stop == Some(i0 + jj)).then(|| snapshot(sums, ex[jj]))
        };
        if self.up {
            for jj in 0..len {
                if let Some(out) = step(jj, sums) {
                    return out;
                }
            }
        } else {
            for jj in (0..len).rev() {
                if let Some(out) = step(jj, sums) {
                    return out;
                }
            }
        }
        (SplitLog::ZERO, 0.0)
    }

    /// Upward: the sums over `[start, k)`; downward: over `[max(k, start), n)`. The full
    /// sums are the saved totals, so `k = start` (down) and `k = n` (up) match them exactly.
    fn at<A, C>(&self, k: usize, log_term: &A, companion: Option<&C>) -> (SplitLog, f64)
    where
        A: Fn(usize) -> f64,
        C: Fn(usize) -> f64,
    {
        if self.up {
            if k <= self.start {
                return (SplitLog::ZERO, 0.0);
            }
            if k >= self.n {
                return self.total;
            }
            let j = (k - 1 - self.start) / TERM_BLOCK;
            let mut sums = self.saved[j];
            self.run_block(j, &mut sums, log_term, companion, Some(k - 1))
        } else {
            if k <= self.start {
                return self.total;
            }
            if k >= self.n {
                return (SplitLog::ZERO, 0.0);
            }
            let j = (self.n - 1 - k) / TERM_BLOCK;
            let mut sums = self.saved[j];
            self.run_block(j, &mut sums, log_term, companion, Some(k))
        }
    }
}

/// `(log s, g / s)` of running sums whose unit is `2^exp`.
fn snapshot(sums: &Sums, exp: i32) -> (SplitLog, f64) {
    let s = total(sums.s);
    let ratio = if s > 0.0 { total(sums.g) / s } else { 0.0 };
    (SplitLog::from_scaled(s, exp), ratio)
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
#[derive(Debug, Clone)]
pub struct QrsIndex {
    /// Log-ratios in ascending order (`-inf` first); samples with zero weight are dropped.
    l: Vec<f64>,
    /// Log-weights in the same order (empty when all weights are 1).
    w: Vec<f64>,
    /// The largest kept log-ratio, subtracted from every log-ratio in the sums.
    l_shift: f64,
    /// The largest log-weight (0 when unweighted), subtracted from every log-weight in the sums.
    w_shift: f64,
    /// Number of samples given (zero-weight ones included), for feature matrices.
    n_input: usize,
    /// Fingerprint of the inputs, to check those given again for feature moments.
    fingerprint: u64,
    /// Number of sorted samples with `l = -inf`.
    n_zero: usize,
    /// `Σ_{i<k} ω_i r_i`.
    up: BlockedSums,
    /// `Σ_{i>=k} ω_i r_i` and `Σ_{i>=k} ω_i r_i (l_i - l_max) / Σ_{i>=k} ω_i r_i`.
    down: BlockedSums,
    /// `Σ_{i>=k} ω_i` (unused when unweighted: it is the count `n - k`).
    weights: Option<BlockedSums>,
}

/// A hash of the log-ratios (and log-weights) an index was built from: two inputs that differ
/// anywhere, in value or in order, get different fingerprints except with probability ~2^-64.
fn fingerprint(log_ratios: &[f64], log_weights: Option<&[f64]>) -> u64 {
    // splitmix64's finaliser on (value bits, position); a wrapping sum is order-free, so the
    // parallel reduction is deterministic.
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let hash = |values: &[f64], salt: u64| -> u64 {
        values
            .par_iter()
            .enumerate()
            .map(|(i, v)| mix(v.to_bits() ^ mix((i as u64).wrapping_add(salt))).wrapping_add(salt))
            .reduce(|| 0, u64::wrapping_add)
    };
    let mut h = hash(log_ratios, 0x9e37_79b9_7f4a_7c15);
    if let Some(w) = log_weights {
        h = mix(h ^ hash(w, 0x2545_f491_4f6c_dd1d));
    }
    h
}

/// Blocks of this many samples share one exponent shift, so their exponentials are vectorised.
const TERM_BLOCK: usize = 256;
/// A block whose finite log-terms span at most this many nats gets one unit for all its terms.
const BLOCK_SPAN: f64 = 300.0;

/// How the terms of one block relate to the unit of their running sums.
#[derive(Debug, Clone, Copy)]
enum BlockUnit {
    /// One unit `2^exp` for the whole block, reached by multiplying the sums by `pre` first.
    Uniform { pre: f64, exp: i32 },
    /// The unit changes inside the block: `factors[j]` rescales the sums before term `j`, and
    /// `exps[j]` is the unit's exponent once it is added.
    PerSample,
}

/// Computes `terms[j] = e^{a[j]}` in the unit of `scale` for one block, visited in array order
/// (or in reverse when `rev`).
///
/// Invariant: a unit only ever rises, and never above a term about to be added, so every sum
/// taken after its first term is at least about one unit and terms that underflow in it are
/// negligible against it.
fn block_terms(
    scale: &mut Scale,
    a: &[f64],
    rev: bool,
    shifted: &mut [f64],
    terms: &mut [f64],
    factors: &mut [f64],
    exps: &mut [i32],
) -> BlockUnit {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in a {
        if v > f64::NEG_INFINITY {
            lo = lo.min(v);
        }
        hi = hi.max(v);
    }
    let terms = &mut terms[..a.len()];
    if hi == f64::NEG_INFINITY {
        terms.fill(0.0);
        return BlockUnit::Uniform {
            pre: 1.0,
            exp: scale.exp,
        };
    }
    if hi - lo <= BLOCK_SPAN {
        let mut pre = 1.0;
        if !scale.started || hi > f64::from(scale.exp + RESCALE_BITS) * LN2 {
            pre = scale.admit_floor(lo);
        }
        let e = f64::from(scale.exp);
        let (hi_shift, lo_shift) = (e * LN2_HI, e * LN2_LO);
        let shifted = &mut shifted[..a.len()];
        for (x, &v) in shifted.iter_mut().zip(a) {
            *x = (v - hi_shift) - lo_shift;
        }
        // Arguments are at most BLOCK_SPAN + RESCALE_BITS·ln 2 < 709, where exp_nonpos is exact.
        vexp::exp_into(shifted, 0.0, terms);
        return BlockUnit::Uniform {
            pre,
            exp: scale.exp,
        };
    }
    let mut visit = |j: usize| {
        factors[j] = scale.admit(a[j]);
        terms[j] = scale.units(a[j]);
        exps[j] = scale.exp;
    };
    if rev {
        (0..a.len()).rev().for_each(&mut visit);
    } else {
        (0..a.len()).for_each(&mut visit);
    }
    BlockUnit::PerSample
}

/// A float mapped to an unsigned integer with the same order (`-inf` lowest), and back.
fn order_key(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

fn from_order_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// `values` in ascending order, in one buffer of their size: integer keys are sorted (a
/// branch-free comparison) and mapped back in place (`into_iter().map().collect()` between
/// types of one layout reuses the allocation).
fn sorted(values: &[f64]) -> Vec<f64> {
    let mut keys: Vec<u64> = values.par_iter().map(|&v| order_key(v)).collect();
    keys.par_sort_unstable();
    keys.into_iter().map(from_order_key).collect()
}

/// Compensated sums `s = Σ e^{a_i}` and `g_c = Σ e^{a_i} f_ic` over one bucket of samples, in
/// a binary unit of their own.
#[derive(Debug, Clone)]
struct Bucket {
    scale: Scale,
    s: (f64, f64),
    g: Vec<(f64, f64)>,
}

impl Bucket {
    fn new(k: usize) -> Self {
        Bucket {
            scale: Scale::new(),
            s: (0.0, 0.0),
            g: vec![(0.0, 0.0); k],
        }
    }

    fn rescale(&mut self, factor: f64) {
        if factor != 1.0 {
            scale_pair(&mut self.s, factor);
            for acc in &mut self.g {
                scale_pair(acc, factor);
            }
        }
    }

    /// Adds `e^{a}` with features `row`.
    fn add(&mut self, a: f64, row: &[f64]) {
        let f = self.scale.admit(a);
        self.rescale(f);
        let term = self.scale.units(a);
        neumaier_add(&mut self.s, term);
        for (acc, &fv) in self.g.iter_mut().zip(row) {
            neumaier_add(acc, term * fv);
        }
    }

    /// Adds another bucket's sums, both brought to the larger unit.
    fn merge(&mut self, other: &Bucket) {
        if !other.scale.started {
            return;
        }
        if !self.scale.started || other.scale.exp > self.scale.exp {
            let factor = if self.scale.started {
                pow2(self.scale.exp - other.scale.exp)
            } else {
                1.0
            };
            self.rescale(factor);
            self.scale = other.scale;
        }
        let factor = pow2(other.scale.exp - self.scale.exp);
        let add = |acc: &mut (f64, f64), v: (f64, f64)| {
            neumaier_add(acc, v.0 * factor);
            neumaier_add(acc, v.1 * factor);
        };
        add(&mut self.s, other.s);
        for (acc, &v) in self.g.iter_mut().zip(&other.g) {
            add(acc, v);
        }
    }

    /// `g / s` (zeros while the bucket is empty).
    fn mean_into(&self, out: &mut [f64]) {
        let st = total(self.s);
        if st > 0.0 {
            for (m, acc) in out.iter_mut().zip(&self.g) {
                *m = total(*acc) / st;
            }
        }
    }
}

/// No companion sum.
const NO_COMPANION: Option<&fn(usize) -> f64> = None;

impl QrsIndex {
    /// Sorts the samples and builds the blocked prefix and suffix sums.
    ///
    /// Memory: one sorted copy of the kept log-ratios (and, when weighted, of their
    /// log-weights: the pairs are sorted together, then split, so the peak is twice that).
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
        let weighted = log_weights.is_some_and(|w| w.iter().any(|&v| v != 0.0));
        let (l, w) = match log_weights {
            Some(lw) if weighted => {
                let mut pairs: Vec<(f64, f64)> = log_ratios
                    .par_iter()
                    .zip(lw)
                    .filter(|(_, &w)| w > f64::NEG_INFINITY)
                    .map(|(&l, &w)| (l, w))
                    .collect();
                pairs.par_sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
                let w: Vec<f64> = pairs.par_iter().map(|p| p.1).collect();
                let l: Vec<f64> = pairs.par_iter().map(|p| p.0).collect();
                (l, w)
            }
            _ => (sorted(log_ratios), Vec::new()),
        };
        let n = l.len();
        if n == 0 {
            return Err(invalid(format!(
                "every entry of {LOG_WEIGHTS} is -inf: samples that all weigh zero define no mean"
            )));
        }
        let n_zero = l.partition_point(|&v| v == f64::NEG_INFINITY);
        if n_zero == n {
            return Err(invalid(format!(
                "every entry of {LOG_RATIOS} with nonzero weight is -inf: the target gives zero \
                 weight to all samples, so no beta trade-off can be estimated from them"
            )));
        }
        // Kept log-weights are finite, so the maximum is too.
        let w_shift = if w.is_empty() {
            0.0
        } else {
            w.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        };
        let mut index = QrsIndex {
            l_shift: l[n - 1],
            w_shift,
            l,
            w,
            n_input: log_ratios.len(),
            fingerprint: fingerprint(log_ratios, log_weights.filter(|_| weighted)),
            n_zero,
            up: BlockedSums::build(0, 0, true, &|_| 0.0, NO_COMPANION),
            down: BlockedSums::build(0, 0, false, &|_| 0.0, NO_COMPANION),
            weights: None,
        };
        let ((up, down), weights) = rayon::join(
            || {
                rayon::join(
                    || BlockedSums::build(n, n_zero, true, &|i| index.log_term(i), NO_COMPANION),
                    || {
                        let companion = |i: usize| index.l[i] - index.max_log_ratio();
                        BlockedSums::build(
                            n,
                            n_zero,
                            false,
                            &|i| index.log_term(i),
                            Some(&companion),
                        )
                    },
                )
            },
            || {
                (!index.w.is_empty())
                    .then(|| BlockedSums::build(n, 0, false, &|i| index.weight(i), NO_COMPANION))
            },
        );
        index.up = up;
        index.down = down;
        index.weights = weights;
        Ok(index)
    }

    /// `log ω_i + log r_i` of sorted sample `i`.
    fn log_term(&self, i: usize) -> f64 {
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
    fn weight(&self, i: usize) -> f64 {
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
        let m = idx.feature_moments(&l, None, &f, 2, &betas).unwrap();
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
            accept(&l, &u, 0.0, Uniforms::Plain).unwrap(),
            vec![true, false, false, true]
        );
        let lu: Vec<f64> = u.iter().map(|v| v.ln()).collect();
        assert_eq!(
            accept(&l, &lu, 0.0, Uniforms::Log).unwrap(),
            vec![true, false, false, true]
        );
        assert!(accept(&l, &[0.5, 0.5, 1.0, 0.5], 0.0, Uniforms::Plain)
            .unwrap_err()
            .to_string()
            .contains("uniforms[2]"));
        assert!(accept(&[f64::NAN], &[0.5], 0.0, Uniforms::Plain)
            .unwrap_err()
            .to_string()
            .contains("log_ratios[0] is NaN"));
        assert!(accept(&[0.0], &[0.5], f64::NAN, Uniforms::Plain).is_err());
        assert!(accept(&[0.0], &[0.5, 0.1], 0.0, Uniforms::Plain).is_err());
    }

    #[test]
    fn imh_moves_by_ratio() {
        let run = imh_chain(
            &[0.0, -1.0, 1.0, f64::NEG_INFINITY],
            &[0.9, 0.5, 0.99, 0.0],
            Uniforms::Plain,
            f64::NEG_INFINITY,
        )
        .unwrap();
        // Step 0 leaves the -inf start; step 1 proposes ratio e^-1 ≈ 0.37 < 0.5: stay; step 2 moves up.
        assert_eq!(run.states, vec![0, 0, 2, 2]);
        assert_eq!(run.accepted, vec![true, false, true, false]);
        assert_eq!(run.final_log_ratio, 1.0);
    }
}
