//! Compensated sums of `e^{a_i}` kept in a binary unit that follows their magnitude, in
//! blocks that can be replayed up to any prefix or suffix: the summation machinery of the
//! index (see the module documentation of `qrs`).

use crate::consts::{LN2, LN2_HI, LN2_LO};
use crate::vexp::{self, neumaier_add};

/// A running sum is rescaled once a term exceeds `2^RESCALE_BITS` of its current unit.
pub(super) const RESCALE_BITS: i32 = 512;
/// `2^d` as an exact power of two (0 below the normal range, where it is negligible here).
pub(super) fn pow2(d: i32) -> f64 {
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
pub(super) const MAX_UNIT_EXP: f64 = 1_073_741_824.0;

/// `floor(log_term / ln 2)`, clamped to ±[`MAX_UNIT_EXP`] (`-inf` gives the lowest).
pub(super) fn binary_exponent(log_term: f64) -> i32 {
    (log_term / LN2).floor().clamp(-MAX_UNIT_EXP, MAX_UNIT_EXP) as i32
}

/// The binary unit `2^exp` of a family of running sums.
///
/// Invariant: every sum kept in this unit has absolute value at most `N · 2^RESCALE_BITS`, so it
/// neither overflows nor loses the relative precision of its largest terms; rescaling multiplies
/// by an exact power of two, which keeps the Neumaier compensation valid.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scale {
    pub(super) exp: i32,
    pub(super) started: bool,
}

impl Scale {
    pub(super) fn new() -> Self {
        Scale {
            exp: 0,
            started: false,
        }
    }

    /// Makes room for a term `e^{log_term}`; returns the factor the running sums must be multiplied by.
    pub(super) fn admit(&mut self, log_term: f64) -> f64 {
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
    pub(super) fn admit_floor(&mut self, log_term: f64) -> f64 {
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
    pub(super) fn units(self, log_term: f64) -> f64 {
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
pub(super) struct SplitLog {
    pub(super) e: i32,
    pub(super) m: f64,
}

impl SplitLog {
    /// The log of zero.
    pub(super) const ZERO: SplitLog = SplitLog { e: 0, m: 0.0 };

    /// `log(value · 2^exp)` for `value >= 0`.
    #[inline]
    pub(super) fn from_scaled(value: f64, exp: i32) -> Self {
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
    pub(super) fn of_count(n: usize) -> Self {
        Self::from_scaled(n as f64, 0)
    }

    pub(super) fn is_zero(self) -> bool {
        self.m == 0.0
    }

    /// The logarithm as one float.
    pub(super) fn value(self) -> f64 {
        if self.is_zero() {
            return f64::NEG_INFINITY;
        }
        f64::from(self.e) * LN2 + self.m.ln()
    }

    /// `log self - log other + shift`.
    pub(super) fn minus(self, other: SplitLog, shift: f64) -> f64 {
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
    pub(super) fn subtractor(self) -> impl Fn(f64) -> f64 + Sync {
        let e = f64::from(self.e);
        let (hi, lo, lm) = (e * LN2_HI, e * LN2_LO, self.m.ln());
        move |x| ((x - hi) - lo) - lm
    }
}

pub(super) fn scale_pair(acc: &mut (f64, f64), factor: f64) {
    acc.0 *= factor;
    acc.1 *= factor;
}

pub(super) fn total(acc: (f64, f64)) -> f64 {
    acc.0 + acc.1
}

/// Running compensated sums `s = Σ e^{a_i}` and `g = Σ e^{a_i} c_i` in one binary unit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sums {
    pub(super) scale: Scale,
    pub(super) s: (f64, f64),
    pub(super) g: (f64, f64),
}

impl Sums {
    pub(super) fn new() -> Self {
        Sums {
            scale: Scale::new(),
            s: (0.0, 0.0),
            g: (0.0, 0.0),
        }
    }

    pub(super) fn rescale(&mut self, factor: f64) {
        scale_pair(&mut self.s, factor);
        scale_pair(&mut self.g, factor);
    }
}

/// Prefix (upward from `start`) or suffix (downward from the end) sums over the sorted samples,
/// run in blocks of [`TERM_BLOCK`] with the state saved before each block. Any prefix or suffix
/// sum is then the saved state plus part of one block, recomputed exactly as in the full pass:
/// O(N / TERM_BLOCK) memory and O(TERM_BLOCK) per query.
#[derive(Debug, Clone)]
pub(super) struct BlockedSums {
    pub(super) start: usize,
    pub(super) n: usize,
    pub(super) up: bool,
    pub(super) saved: Vec<Sums>,
    /// `(log s, g / s)` over everything.
    pub(super) total: (SplitLog, f64),
}

impl BlockedSums {
    pub(super) fn blocks(start: usize, n: usize) -> usize {
        (n - start).div_ceil(TERM_BLOCK)
    }

    /// Sample range `[i0, i1)` of block `j`.
    pub(super) fn range(&self, j: usize) -> (usize, usize) {
        if self.up {
            let i0 = self.start + j * TERM_BLOCK;
            (i0, (i0 + TERM_BLOCK).min(self.n))
        } else {
            let i1 = self.n - j * TERM_BLOCK;
            (i1.saturating_sub(TERM_BLOCK).max(self.start), i1)
        }
    }

    pub(super) fn build<A, C>(
        n: usize,
        start: usize,
        up: bool,
        log_term: &A,
        companion: Option<&C>,
    ) -> Self
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
    pub(super) fn run_block<A, C>(
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
    pub(super) fn at<A, C>(&self, k: usize, log_term: &A, companion: Option<&C>) -> (SplitLog, f64)
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
pub(super) fn snapshot(sums: &Sums, exp: i32) -> (SplitLog, f64) {
    let s = total(sums.s);
    let ratio = if s > 0.0 { total(sums.g) / s } else { 0.0 };
    (SplitLog::from_scaled(s, exp), ratio)
}
/// Blocks of this many samples share one exponent shift, so their exponentials are vectorised.
pub(super) const TERM_BLOCK: usize = 256;
/// A block whose finite log-terms span at most this many nats gets one unit for all its terms.
pub(super) const BLOCK_SPAN: f64 = 300.0;

/// How the terms of one block relate to the unit of their running sums.
#[derive(Debug, Clone, Copy)]
pub(super) enum BlockUnit {
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
pub(super) fn block_terms(
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

/// Compensated sums `s = Σ e^{a_i}` and `g_c = Σ e^{a_i} f_ic` over one bucket of samples, in
/// a binary unit of their own.
#[derive(Debug, Clone)]
pub(super) struct Bucket {
    pub(super) scale: Scale,
    pub(super) s: (f64, f64),
    pub(super) g: Vec<(f64, f64)>,
}

impl Bucket {
    pub(super) fn new(k: usize) -> Self {
        Bucket {
            scale: Scale::new(),
            s: (0.0, 0.0),
            g: vec![(0.0, 0.0); k],
        }
    }

    pub(super) fn rescale(&mut self, factor: f64) {
        if factor != 1.0 {
            scale_pair(&mut self.s, factor);
            for acc in &mut self.g {
                scale_pair(acc, factor);
            }
        }
    }

    /// Adds `e^{a}` with features `row`.
    pub(super) fn add(&mut self, a: f64, row: &[f64]) {
        let f = self.scale.admit(a);
        self.rescale(f);
        let term = self.scale.units(a);
        neumaier_add(&mut self.s, term);
        for (acc, &fv) in self.g.iter_mut().zip(row) {
            neumaier_add(acc, term * fv);
        }
    }

    /// Adds another bucket's sums, both brought to the larger unit.
    pub(super) fn merge(&mut self, other: &Bucket) {
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
    pub(super) fn mean_into(&self, out: &mut [f64]) {
        let st = total(self.s);
        if st > 0.0 {
            for (m, acc) in out.iter_mut().zip(&self.g) {
                *m = total(*acc) / st;
            }
        }
    }
}

/// No companion sum.
pub(super) const NO_COMPANION: Option<&fn(usize) -> f64> = None;
