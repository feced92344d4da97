//! Building the index: one sort of the kept log-ratios (in the index's own vector or in a
//! buffer the caller sorted), then the blocked prefix and suffix sums (docs/design.md §7.2).

use rayon::prelude::*;

use super::index::QrsIndex;
use super::sums::{BlockedSums, NO_COMPANION};
use super::{LOG_RATIOS, LOG_WEIGHTS};
use crate::error::{check_log_scores, check_same_length, invalid, Result};
use crate::vexp;

/// Where the sorted log-ratios live: the index's own vector, or a buffer that the caller sorted
/// in place and keeps alive and unchanged for as long as the index (the binding lets numpy's
/// vectorised sort order its one copy: several times faster than a comparison sort).
pub type SortedStore = Box<dyn std::ops::Deref<Target = [f64]> + Send + Sync>;

/// A read-only slice of `f64` taken once from the object that keeps its buffer alive, so that
/// reading it costs no dynamic call: the index's view of its [`SortedStore`], and the
/// binding's view of the numpy array it sorted.
pub struct HeldSlice<O> {
    /// Owns (or keeps alive) the values `data` points at.
    _owner: O,
    data: *const f64,
    len: usize,
}

impl<O> HeldSlice<O> {
    /// Holds `owner` and the `len` values at `data`.
    ///
    /// # Safety
    /// The `len` values at `data` must be initialised and stay alive, unchanged and at the same
    /// address for as long as `owner` lives, wherever it is moved, and reading them from any
    /// thread must be sound.
    pub unsafe fn new(owner: O, data: *const f64, len: usize) -> Self {
        // An empty buffer may come with a null pointer, which no slice may have.
        let data = if len == 0 {
            std::ptr::NonNull::dangling().as_ptr()
        } else {
            data
        };
        HeldSlice {
            _owner: owner,
            data,
            len,
        }
    }
}

// SAFETY: the values are only ever read, and the contract of `new` keeps them alive and
// unchanged at one address while the owner lives, on whichever thread holds it; moving a
// `HeldSlice` moves the owner, not the buffer.
unsafe impl<O: Send> Send for HeldSlice<O> {}
// SAFETY: as above.
unsafe impl<O: Sync> Sync for HeldSlice<O> {}

impl<O> std::ops::Deref for HeldSlice<O> {
    type Target = [f64];

    #[inline(always)]
    fn deref(&self) -> &[f64] {
        // SAFETY: `len` values at `data` (non-null) are alive and unchanged while `_owner` is
        // (the contract of `new`).
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

/// The index's sorted log-ratios.
pub(super) type Sorted = HeldSlice<SortedStore>;

/// Takes the slice of `store` once.
fn held(store: SortedStore) -> Sorted {
    let (data, len) = (store.as_ptr(), store.len());
    // SAFETY: `data` points into the heap buffer of `store`, which is `Send + Sync`, owned by
    // the `HeldSlice` and never written (a `SortedStore` is read-only by contract); moving the
    // box does not move the buffer.
    unsafe { HeldSlice::new(store, data, len) }
}

impl std::fmt::Debug for QrsIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QrsIndex")
            .field("n", &self.l.len())
            .field("log_z", &self.log_z())
            .finish_non_exhaustive()
    }
}

/// A fingerprint of the log-ratios (and log-weights) an index was built from, to notice inputs
/// changed before they are read again. Each term `(bits ^ i·C1)·C2` is a bijection of the value
/// for its position (odd `C2`), so changing any one value always changes the wrapping sum; the
/// sum is order-free, so the parallel reduction is deterministic. One multiply per value: it
/// costs a few percent of building the index.
pub(super) fn fingerprint(log_ratios: &[f64], log_weights: Option<&[f64]>) -> u64 {
    const C1: u64 = 0x9e37_79b9_7f4a_7c15;
    const C2: u64 = 0xbf58_476d_1ce4_e5b9;
    let term = |i: usize, v: f64| (v.to_bits() ^ (i as u64).wrapping_mul(C1)).wrapping_mul(C2);
    let hash = |values: &[f64]| -> u64 {
        if values.len() < vexp::PARALLEL_THRESHOLD {
            values
                .iter()
                .enumerate()
                .fold(0u64, |h, (i, &v)| h.wrapping_add(term(i, v)))
        } else {
            values
                .par_iter()
                .enumerate()
                .map(|(i, &v)| term(i, v))
                .reduce(|| 0, u64::wrapping_add)
        }
    };
    let h = hash(log_ratios);
    match log_weights {
        None => h,
        Some(w) => h ^ hash(w).rotate_left(17).wrapping_mul(C1),
    }
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

impl QrsIndex {
    /// Sorts the samples and builds the blocked prefix and suffix sums.
    ///
    /// Memory: one sorted copy of the kept log-ratios (and, when weighted, of their
    /// log-weights: the pairs are sorted together, then split, so the peak is twice that).
    pub fn new(log_ratios: &[f64], log_weights: Option<&[f64]>) -> Result<Self> {
        Self::build(log_ratios, log_weights, None)
    }

    /// As [`QrsIndex::new`] without weights, from the caller's ascending copy of `log_ratios`,
    /// which the index keeps instead of making its own. It is checked to have the same length
    /// and to be non-decreasing; that it holds the same values is the caller's contract.
    pub fn from_sorted(log_ratios: &[f64], sorted_log_ratios: SortedStore) -> Result<Self> {
        Self::build(log_ratios, None, Some(sorted_log_ratios))
    }

    fn build(
        log_ratios: &[f64],
        log_weights: Option<&[f64]>,
        presorted: Option<SortedStore>,
    ) -> Result<Self> {
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
                (Box::new(l) as SortedStore, w)
            }
            _ => match presorted {
                None => (Box::new(sorted(log_ratios)) as SortedStore, Vec::new()),
                Some(sl) => {
                    check_same_length(&[
                        (LOG_RATIOS, log_ratios.len()),
                        ("sorted_log_ratios", sl.len()),
                    ])?;
                    if let Some(i) = sl.windows(2).position(|p| !(p[0] <= p[1])) {
                        return Err(invalid(format!(
                            "sorted_log_ratios[{}] = {} is below its predecessor {}: not sorted",
                            i + 1,
                            sl[i + 1],
                            sl[i]
                        )));
                    }
                    (sl, Vec::new())
                }
            },
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
            l: held(l),
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
}
