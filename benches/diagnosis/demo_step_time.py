"""Seconds per step of the demo's tuner (40-step settings), split as the tuner logs them.
(A diagnosis behind BENCHMARKS.md's "Convergence"; not a harness benchmark.)

    python benches/diagnosis/demo_step_time.py EBM_DIR '{"sampling_batch_size": 256, "scoring_batch_size": 256}'

Runs 4 steps with the demo's tuner settings (``disco.cli.config.demo_config``: 512 samples a
step, metrics on 128, Adam 2e-4, the average) updated by the given TunerConfig settings, on torch's default threads (set
``OMP_NUM_THREADS`` to choose), and prints each step's ``time/*`` entries.
"""

import json
import sys
from pathlib import Path

import torch

# The demo problem is shared with bench_convergence.py, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _demo_problem import demo_problem, script_args
from disco.cli.config import demo_config
from disco.tuners import KLLoss, Tuner

ebm_dir, raw_settings = script_args(__doc__, 2)
settings = json.loads(raw_settings)
torch.manual_seed(0)
problem = demo_problem(ebm_dir)
config = demo_config()["tuner"] | {"n_steps": 4} | settings
tuner = Tuner(
    problem.policy,
    problem.target,
    KLLoss(),
    base=problem.base,
    features=(problem.feature,),
    kl_from_base=True,
    **config,
)
tuner.tune()
for step in tuner.history:
    print({k: round(v, 3) for k, v in step.items() if k.startswith("time/")})
