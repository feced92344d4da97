"""One data-parallel DPG run on the embedded model; launched by bench_scaling.py via torchrun.

Prints (rank 0) one JSON line: the per-step timings and the first step's statistics, which
bench_scaling checks are the same for every world size before it reports any time.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from disco.distributed import init_from_environment
from disco.distributions import LMDistribution
from disco.features import word_present
from disco.models import default_model_path
from disco.scorers import ExponentialScorer
from disco.tuners import DPGTuner


def main() -> None:
    settings = json.loads(sys.argv[1])
    torch.set_num_threads(settings["threads"])
    world = init_from_environment()
    path = str(default_model_path())
    base = LMDistribution(path, length=40)
    policy = LMDistribution(path, length=40, freeze=False)
    tuner = DPGTuner(
        policy,
        base * ExponentialScorer([word_present("LORD")], [1.0]),
        n_steps=settings["steps"] + 1,
        samples_per_context=settings["samples"],
        sampling_batch_size=64,
        scoring_batch_size=64,
        learning_rate=1e-4,
        seed=0,
        # How the gradients meet (TunerConfig.parallel); FSDP tunes without averaging.
        parallel=settings.get("parallel", "auto"),
        averaging=settings.get("averaging", "ema"),
        fsdp_lockstep=settings.get("fsdp_lockstep", False),  # FSDP: sharded within a step too
    )
    history = tuner.tune()
    timed = history[1:]  # the first step warms up
    if world.is_main:
        keys = ("time/step", "time/sample", "time/score", "time/backward", "time/collectives")
        print(
            json.dumps(
                {
                    "first": {k: history[0][k] for k in ("log_z", "kl_target_proposal", "ess")},
                    "finite": bool(all(np.isfinite(h["loss"]) for h in history)),
                    "gradients": tuner.gradients.name,
                    **{k: float(np.median([h[k] for h in timed])) for k in keys},
                }
            )
        )
    if world.size > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
