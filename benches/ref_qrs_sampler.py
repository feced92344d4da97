"""disco 1.1.1's ``QuasiRejectionSampler`` on the embedded model, timed on request.

Run by ``bench_qrs_sampler.py`` under the reference venv's Python, as
``ref_qrs_sampler.py JSON_PARAMS``; never imported by disco or its tests. It builds the same
proposal and target as the benchmark (the embedded GPT-2, ``P = a * exp(lambda * word)``, the
benchmark's beta), prints one JSON line when ready, then answers each line ``CALLS`` on its
standard input with one JSON line: the wall-clock and CPU seconds taken by ``CALLS`` calls of
``sampler.sample(sampling_size)``, and the proposals made and accepted. ``quit`` ends it.

Staying alive between rounds lets the benchmark interleave 1.1.1's rounds with ours, so a
burst of load from another process hits both alike.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ref_runner import install_disco_shims, versions
from ref_models import _legacy_copy, _word


def main(params: dict) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="disco-ref-qrs-"))
    try:
        install_disco_shims(workdir)
        import torch

        from disco.distributions import LMDistribution
        from disco.samplers import QuasiRejectionSampler
        from disco.scorers import BooleanScorer, ExponentialScorer

        torch.set_num_threads(int(params["threads"]))
        torch.manual_seed(int(params["seed"]))
        proposal = LMDistribution(_legacy_copy(params["model"], workdir), length=params["length"])
        factor = ExponentialScorer(
            [BooleanScorer(_word(params["word"]))], torch.tensor([float(params["lambda"])])
        )
        sampler = QuasiRejectionSampler(proposal * factor, proposal, beta=float(params["beta"]))
        size = int(params["sampling_size"])
        ready = {"ready": True, "versions": versions(), "torch threads": torch.get_num_threads()}
        print(json.dumps(ready), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                break
            accepted = 0
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(int(command)):
                samples, _log_scores = sampler.sample(sampling_size=size)
                accepted += len(samples)
            report = {
                "wall": time.perf_counter() - wall,
                "cpu": time.process_time() - cpu,
                "proposed": int(command) * size,
                "accepted": accepted,
            }
            print(json.dumps(report), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
