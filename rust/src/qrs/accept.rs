//! The QRS accept/reject decision and the independent Metropolis–Hastings chain
//! (docs/design.md §7.1, §8).

use rayon::prelude::*;

use super::LOG_RATIOS;
use crate::dispatch::with_avx2;
use crate::error::{check_log_scores, check_same_length, invalid, Result};
use crate::vexp;

/// Elements per parallel task in the accept/reject kernel.
pub(super) const ACCEPT_TASK: usize = 1 << 15;

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
