"""What the several-process tests share: the worker that runs jobs on spawned gloo ranks, and the
tuner outcome they compare.

A job is ``name -> (function, args)``; its function must be importable by name in a spawned
process (defined at the top level of a module under tests/).
"""

from __future__ import annotations

import datetime
import os
import pickle
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp

from disco.scorers import BooleanScorer
from disco.tuners import Tuner

HERE = Path(__file__).parent
STEPS = 3
# Far above any wait between two ranks' collectives here, even on a loaded 2-core machine.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


def has_a(sample: Any, context: Any) -> bool:
    return "a" in sample.text.split()


HAS_A = BooleanScorer(has_a, name="has_a")


def _full(value: torch.Tensor) -> np.ndarray:
    """A parameter as numpy; FSDP's shards gathered (a collective: every rank calls it)."""
    if isinstance(value, torch.distributed.tensor.DTensor):
        value = value.full_tensor()
    return value.detach().numpy().copy()


def _outcome(tuner: Tuner) -> dict[str, Any]:
    return {
        "parameters": {k: _full(v) for k, v in tuner.parameters.items()},
        "history": [
            {k: v for k, v in m.items() if not k.startswith("time/")} for m in tuner.history
        ],
        "log_z": {key: tuner.log_z(key) for key in tuner.log_z_sums},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, size: int, port: int, out: str, jobs: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    # What torchrun sets: accelerate (parallel='ddp') reads the world from it.
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(size),
        LOCAL_WORLD_SIZE=str(size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    # A collective one rank never joins fails the test after this, instead of hanging it.
    torch.distributed.init_process_group("gloo", init_method="env://", timeout=COLLECTIVE_TIMEOUT)
    try:
        results = {name: fn(*args) for name, (fn, args) in jobs.items()}
        with open(os.path.join(out, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump(results, f)
    finally:
        torch.distributed.destroy_process_group()


def run_two(tmp: Path, jobs: dict[str, Any]) -> list[dict[str, Any]]:
    """Run ``jobs`` (name -> (function, args)) on 2 spawned ranks; each rank's results."""
    mp.start_processes(
        _worker, args=(2, _free_port(), str(tmp), jobs), nprocs=2, start_method="spawn"
    )
    ranks = []
    for rank in range(2):
        with open(tmp / f"rank{rank}.pkl", "rb") as f:
            ranks.append(pickle.load(f))
    return ranks
