"""QRS end to end: accepted samples per second at acceptance 0.5 on the embedded model.

Proposal: the embedded KJV GPT-2 (``LMDistribution``, 20-token samples). Target: the same model
times ``exp(lambda * word('LORD'))`` (an EBM; scoring it is a forward pass of the model). Beta
is set, from a pilot sample of the proposal, so that QRS accepts half of the proposals.

Three contestants, each doing the same unit of work, ``CALLS`` batches of ``SAMPLING_SIZE``
proposals a round:

- **ours**: ``disco.samplers.QuasiRejectionSampler.sample``: draw, score the target, decide;
- **disco 1.1.1**: its ``QuasiRejectionSampler.sample`` on the same model, target and beta, in
  a long-lived subprocess under the reference venv (``ref_qrs_sampler.py``), so its rounds can
  be interleaved with ours;
- **the limit**: the proposal's own ``sample`` and the target's ``log_score`` on the same
  batches and nothing else; its accepted samples per second are the acceptance rate times its
  proposals per second, what a sampler with no overhead of its own would deliver.

Check, then time: both samplers' acceptance rates on the first (untimed) rounds must lie within
the 99.9% band of their binomial error (plus the pilot's error on beta) around 0.5, or the
contestant is not timed. Then the rounds are interleaved, their order rotated each round;
a contestant's speed is its proposals per CPU second of its own process (one torch thread on
both sides, so that is the work done; wall-clock time would also count the time other
processes on the shared cores took from it), the median over rounds, and its accepted samples
per second that times its acceptance rate over all its rounds. Ratios to ours are paired by
round (the median of the per-round speed ratios, times the ratio of acceptance rates). The
wall-clock speeds are reported beside them.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from _harness import Context, fmt_ratio, reference_env, table
from _models import HERE, default_model
from disco.distributions import LMDistribution
from disco.features import word_present
from disco.samplers import QRSEstimator, QuasiRejectionSampler
from disco.scorers import ExponentialScorer

SEED = 0
LENGTH = 20
WORD = "LORD"
#: The target's coefficient: with the base's rate of the word (about 0.12), acceptance 0.5
#: needs a beta inside the two ratios' range, so both outcomes are sometimes rejected.
LAMBDA = 2.0
RATE = 0.5
SAMPLING_SIZE = 128
#: Two-sided 99.9% normal quantile: a correct sampler fails the acceptance check once in
#: a thousand runs.
Z = statistics.NormalDist().inv_cdf(1 - 0.001 / 2)


@dataclass(frozen=True)
class Round:
    """One round's outcome: wall and CPU seconds, proposals, accepted samples (0 for the limit)."""

    wall: float
    cpu: float
    proposed: int
    accepted: int

    @property
    def speed(self) -> float:
        """Proposals per CPU second: the process's own time, which load from other processes
        on the shared cores does not inflate (one torch thread, so CPU time is the work)."""
        return self.proposed / self.cpu


def timed_round(work: Callable[[], int], proposed: int) -> Round:
    """Runs ``work`` (returning its accepted samples) and times it on both clocks."""
    wall, cpu = time.perf_counter(), time.process_time()
    accepted = work()
    return Round(time.perf_counter() - wall, time.process_time() - cpu, proposed, accepted)


class Reference:
    """disco 1.1.1's sampler in its own process, answering one round per request."""

    def __init__(self, python: str, params: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [python, str(HERE / "ref_qrs_sampler.py"), json.dumps(params)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=reference_env(),
        )
        self.ready = self._reply()

    def _reply(self) -> dict[str, Any]:
        """The next JSON line of its output (libraries may print other lines first)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                reply = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(reply, dict):
                return reply
        self.proc.wait(timeout=60)
        err = self.proc.stderr.read() if self.proc.stderr is not None else ""
        raise RuntimeError(f"disco 1.1.1's sampler exited ({self.proc.returncode}):\n{err[-3000:]}")

    def round(self, calls: int) -> Round:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{calls}\n")
        self.proc.stdin.flush()
        reply = self._reply()
        return Round(reply["wall"], reply["cpu"], reply["proposed"], reply["accepted"])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def pilot_beta(base: LMDistribution, target: Any, n: int) -> tuple[float, float]:
    """``log beta`` for acceptance ``RATE`` on ``n`` pilot proposals, and the pilot's standard
    error of the acceptance rate at that beta (the spread of ``min(1, P/(beta q))`` over root n)."""
    log_p, log_q = [], []
    for _ in range(0, n, SAMPLING_SIZE):
        samples, lq = base.sample("", SAMPLING_SIZE)
        log_q.append(lq.double().numpy())
        log_p.append(target.log_score(samples, "").double().numpy())
    lp, lq_all = np.concatenate(log_p), np.concatenate(log_q)
    log_beta = QRSEstimator.from_log_scores(lp, lq_all).log_beta_for_acceptance_rate(RATE)
    accept = np.exp(np.minimum(0.0, lp - lq_all - log_beta))
    return log_beta, float(accept.std(ddof=1) / math.sqrt(accept.size))


def acceptance_band(proposed: int, pilot_se: float) -> float:
    """Half-width of the 99.9% band around ``RATE`` for an acceptance rate over ``proposed``."""
    return Z * math.sqrt(RATE * (1 - RATE) / proposed + pilot_se**2)


def run(ctx: Context) -> str:
    """Check, interleave, and return the markdown section."""
    calls = 2 if ctx.quick else 4
    rounds = 3 if ctx.quick else 9
    pilot = 1024 if ctx.quick else 4096
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    reference = None
    try:
        torch.manual_seed(SEED)
        base = LMDistribution(length=LENGTH)
        target = base * ExponentialScorer([word_present(WORD)], [LAMBDA])
        log_beta, pilot_se = pilot_beta(base, target, pilot)
        sampler = QuasiRejectionSampler(target, base, log_beta=log_beta, seed=SEED)

        def ours_work() -> int:
            return sum(len(sampler.sample("", SAMPLING_SIZE).samples) for _ in range(calls))

        def limit_work() -> int:
            for _ in range(calls):
                samples, _log_q = base.sample("", SAMPLING_SIZE)
                target.log_score(samples, "")
            return 0

        def ours() -> Round:
            return timed_round(ours_work, calls * SAMPLING_SIZE)

        def limit() -> Round:
            return timed_round(limit_work, calls * SAMPLING_SIZE)

        contestants: dict[str, Callable[[], Round]] = {"ours": ours, "limit": limit}
        ref_error = ""
        if ctx.ref_python is not None:
            params = {
                "model": default_model(),
                "length": LENGTH,
                "word": WORD,
                "lambda": LAMBDA,
                "beta": math.exp(log_beta),
                "sampling_size": SAMPLING_SIZE,
                "seed": SEED,
                "threads": 1,
            }
            reference = Reference(str(ctx.ref_python), params)
            ctx.ref_versions.update(reference.ready.get("versions", {}))
            contestants["disco 1.1.1"] = lambda: reference.round(calls)  # type: ignore[union-attr]

        # Check, then time: two untimed rounds of each sampler (also the warm-up).
        outcomes: dict[str, list[Round]] = {name: [] for name in contestants}
        checked: dict[str, tuple[int, int]] = {}
        for name, fn in list(contestants.items()):  # a failing one is removed
            warm = [fn(), fn()]
            if name == "limit":
                continue
            proposed = sum(r.proposed for r in warm)
            accepted = sum(r.accepted for r in warm)
            checked[name] = (proposed, accepted)
            band = acceptance_band(proposed, pilot_se)
            if name == "ours":
                ctx.check("ours: acceptance rate", accepted / proposed, RATE, rtol=0, atol=band)
            elif abs(accepted / proposed - RATE) > band:
                ref_error = (
                    f"✗ acceptance {accepted / proposed:.3f} outside {RATE} ± {band:.3f}: not timed"
                )
                del contestants[name]
        names = list(contestants)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                outcomes[name].append(contestants[name]())
    finally:
        torch.set_num_threads(threads)
        if reference is not None:
            reference.close()

    def speeds(name: str) -> list[float]:
        """Proposals per CPU second in each timed round, in the order the rounds ran."""
        return [r.speed for r in outcomes[name]]

    def acceptance(name: str) -> tuple[float, float, int]:
        """Acceptance rate over all of a sampler's rounds, its binomial error, and proposals."""
        proposed = sum(r.proposed for r in outcomes[name]) + checked.get(name, (0, 0))[0]
        if name == "limit":
            return RATE, 0.0, proposed
        accepted = sum(r.accepted for r in outcomes[name]) + checked[name][1]
        rate = accepted / proposed
        return rate, math.sqrt(rate * (1 - rate) / proposed), proposed

    accepts = {name: acceptance(name) for name in names}
    for name, (rate, _, proposed) in accepts.items():
        if name != "limit":  # the whole run's acceptance, with the timed rounds' proposals too
            band = acceptance_band(proposed, pilot_se)
            ctx.check(f"{name}: acceptance over the run", rate, RATE, rtol=0, atol=band)
    rows = []
    labels = {
        "ours": "ours: `QuasiRejectionSampler.sample`",
        "disco 1.1.1": "disco 1.1.1: `QuasiRejectionSampler.sample`",
        "limit": "limit: the proposal's `sample` + the target's `log_score`, at 0.5",
    }
    for name in ("ours", "disco 1.1.1", "limit"):
        if name not in accepts:
            continue
        rate, se, _ = accepts[name]
        per_s = statistics.median(speeds(name))
        # Paired by round: each round of ours ran next to one of the contestant's, so a burst
        # of load from other processes mostly cancels in the per-round ratio.
        paired = statistics.median(o / c for o, c in zip(speeds("ours"), speeds(name)))
        ratio = paired * accepts["ours"][0] / rate
        wall = statistics.median(r.proposed / r.wall for r in outcomes[name])
        rows.append(
            [
                labels[name],
                f"{per_s:.0f} ({min(speeds(name)):.0f} to {max(speeds(name)):.0f})",
                f"{wall:.0f}",
                f"{rate:.3f} ± {se:.3f}" if name != "limit" else f"{RATE} (set)",
                f"{per_s * rate:.0f}",
                fmt_ratio(ratio),
            ]
        )
    if "disco 1.1.1" not in accepts:
        rows.append([labels["disco 1.1.1"], "—", "—", ref_error or "—", "—", "—"])
    proposals = calls * SAMPLING_SIZE
    lines = [
        "## QRS end to end: accepted samples per second",
        "",
        f"The embedded KJV GPT-2 as the proposal ({LENGTH}-token samples); the target "
        f"`base * exp({LAMBDA} · word:{WORD})`, whose scoring is one forward pass of the same "
        f"model; β = {math.exp(log_beta):.4g}, set on {pilot} pilot proposals so that QRS "
        f"accepts half of them. Each round is {calls} batches of {SAMPLING_SIZE} proposals "
        f"({proposals} proposals); {rounds} rounds per contestant, interleaved in the same run "
        "with their order rotated, after two untimed rounds that also checked each sampler's "
        "acceptance rate against 0.5 (99.9% band of its binomial error plus the pilot's). "
        "Speeds are per CPU second of the contestant's own process (one torch thread on both "
        "sides, so CPU time is the work done; the machine's 2 cores were shared with other "
        "processes, see the load average below, whose share would otherwise count against "
        "whichever contestant it hit): proposals per CPU second, the median over the rounds "
        "(their range in brackets), and the wall-clock median beside it; accepted per second: "
        "the CPU speed times the acceptance rate over all of a sampler's rounds (± its binomial "
        "standard error). The limit is the acceptance rate 0.5 times the speed of the "
        "proposal's sampling plus the target's scoring alone, so ours can only approach it. "
        "Ratio: ours' accepted samples per second over the contestant's, from the median of "
        "the per-round speed ratios (each round of ours ran beside one of the contestant's) "
        "times the ratio of acceptance rates; above 1: ours is faster.",
        "",
        table(
            [
                "contestant",
                "proposals / CPU s",
                "wall-clock proposals / s",
                "acceptance",
                "accepted / CPU s",
                "ours / contestant",
            ],
            rows,
        ),
        "",
    ]
    if ctx.ref_python is None:
        lines += [f"_{ctx.ref_note}_", ""]
    return "\n".join(lines)
