"""Seconds per DPG step: ours vs disco 1.1.1 on the same model and settings, and our overhead.

Overhead is the part of our step that is neither sampling (the proposal's own cost), nor the
policy's forward pass, nor the backward pass: the Rust pseudo-rewards and metrics, Z tracking,
the optimizer step and bookkeeping.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from _models import default_model, run_reference, seconds
from disco.distributions import LMDistribution
from disco.features import word_present
from disco.scorers import ExponentialScorer
from disco.tuners import DPGTuner

TIMES = "\u00d7"


def raw_forward_backward(policy: LMDistribution, samples: list[Any], batch: int) -> float:
    """Seconds for a plain log-likelihood forward + backward of ``samples`` (no tuner)."""
    model = policy.model
    start_id = policy.tokenizer.bos_token_id
    if start_id is None:
        start_id = policy.tokenizer.eos_token_id
    tick = time.perf_counter()
    for i in range(0, len(samples), batch):
        rows = [[start_id, *s.token_ids] for s in samples[i : i + batch]]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        token_lp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        loss = -(token_lp * mask[:, 1:]).sum() / len(samples)
        loss.backward()
    elapsed = time.perf_counter() - tick
    model.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        raise RuntimeError("non-finite raw log-likelihood")
    return elapsed


def run(ctx: Any) -> str:
    samples = 64 if ctx.quick else 256
    steps = 2 if ctx.quick else 4
    settings = {
        "length": 40,
        "word": "LORD",
        "steps": steps,
        "samples": samples,
        "scoring_size": 64,
        "sampling_size": 64,
    }
    torch.manual_seed(0)
    base = LMDistribution(default_model(), length=40)
    target = base * ExponentialScorer([word_present("LORD")], [1.0])
    policy = LMDistribution(default_model(), length=40, freeze=False)
    tuner = DPGTuner(
        policy,
        target,
        n_steps=steps + 1,
        samples_per_context=samples,
        sampling_batch_size=64,
        scoring_batch_size=64,
        learning_rate=1e-4,
    )
    history = tuner.tune()[1:]  # the first step warms up
    for h in history:
        if not all(np.isfinite([h["loss"], h["kl_target_policy"]])):
            raise RuntimeError(f"non-finite metrics in a timed step: {h}")
    step = float(np.median([h["time/step"] for h in history]))
    parts = {
        k: float(np.median([h[k] for h in history]))
        for k in ("time/sample", "time/score", "time/backward")
    }
    overhead = step - sum(parts.values())
    # The model's own cost for the same work, outside the tuner: sampling the step's samples
    # with our LMDistribution.sample, and a plain forward + backward of their log-likelihood.
    raw_sample, raw_fb = [], []
    for _ in range(steps):
        tick = time.perf_counter()
        xs, _lq = policy.sample("", samples)
        raw_sample.append(time.perf_counter() - tick)
        raw_fb.append(raw_forward_backward(policy, xs, 64))
    raw = float(np.median(raw_sample)) + float(np.median(raw_fb))
    ref = run_reference(ctx, "tuner", settings)
    rows = [
        ("ours: DPGTuner step", seconds(step), f"{1 / step:.3g}", "1" + TIMES),
    ]
    if ref is not None:
        theirs = ref["seconds_per_step"]
        rows.append(
            (
                "disco 1.1.1: DPGTuner step",
                seconds(theirs),
                f"{1 / theirs:.3g}",
                f"{theirs / step:.2g}" + TIMES,
            )
        )
    table = "| contestant | seconds per step | steps per second | time / ours |\n| :--- | ---: | ---: | ---: |\n"
    table += "\n".join("| " + " | ".join(r) + " |" for r in rows)
    split = (
        f"Our step, split (medians): sampling {seconds(parts['time/sample'])} (the model's generation and "
        f"the target's scoring), policy forward {seconds(parts['time/score'])}, loss + backward "
        f"{seconds(parts['time/backward'])}; everything else (Rust pseudo-rewards and metrics, Z, "
        f"optimizer, bookkeeping) {seconds(overhead)} = {overhead / step:.1%} of the step. "
        f"The model's own cost outside the tuner (medians): sampling {samples} with "
        f"`LMDistribution.sample` {seconds(float(np.median(raw_sample)))}, a plain log-likelihood "
        f"forward + backward in batches of 64 {seconds(float(np.median(raw_fb)))}; our step is "
        f"{step / raw:.2f}{TIMES} their sum (it also scores the samples under the target)."
    )
    note = "" if ctx.ref_python else f"\n\n_{ctx.ref_note}_"
    return (
        "## Tuning: seconds per DPG step\n\n"
        f"The embedded KJV GPT-2 (2.6M parameters), 40-token samples, {samples} samples per step "
        "in batches of 64, target `base * exp(1.0 * has_word('LORD'))`, Adam; median over "
        f"{steps} steps after one warm-up step (1.1.1: {steps} steps timed as the difference of a "
        f"{steps + 1}-step and a 1-step run; its divergence evaluation switched off). Finite losses "
        "and KL estimates are checked.\n\n" + table + "\n\n" + split + note + "\n"
    )
