"""DeepSpeed ZeRO-2 through accelerate (``parallel='deepspeed'``) tunes as one process does.

Two gloo processes are spawned by the test (as in test_distributed_lm.py). DeepSpeed is an
optional extra (``disco-control[deepspeed]``): without it these tests are skipped. On the CPU
DeepSpeed builds its shared-memory communication op at its first use (ninja and a C++
compiler; cached afterwards).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("deepspeed", reason="needs the 'deepspeed' extra (disco-control[deepspeed])")
pytest.importorskip("accelerate", reason="needs the 'deepspeed' extra (disco-control[deepspeed])")
if not torch.cuda.is_available() and None in (shutil.which("ninja"), shutil.which("c++")):
    pytest.skip("DeepSpeed on CPUs compiles an op: needs ninja and c++", allow_module_level=True)

from conftest import assert_close_after_steps
from distributed_helpers import _free_port, run_two
from test_distributed_cli import assert_reports_alike
from test_distributed_lm import assert_tuned_alike, lora_case, tiny_gpt2_tuner, tuned_outcome

pytestmark = pytest.mark.multiprocess
HERE = Path(__file__).parent


def ds_case(
    folder: str,
    parallel: str = "none",
    optimizer: str = "sgd",
    steps: int = 3,
    checkpoint_dir: str | None = None,
    resume: str | None = None,
    averaging: str = "ema",
    proposal: str = "online",
    max_grad_norm: float | None = None,
) -> dict[str, Any]:
    """A tiny GPT-2 tuned ``steps`` steps; what it ended with (the same on every rank)."""
    policy, tuner = tiny_gpt2_tuner(
        folder,
        # The momentum (or Adam's moments) is optimizer state that ZeRO partitions: the
        # checkpoints carry it.
        optimizer=optimizer,
        learning_rate=0.1 if optimizer == "sgd" else 1e-3,
        max_grad_norm=max_grad_norm,
        parallel=parallel,
        averaging=averaging,
        proposal=proposal,
        checkpoint_dir=checkpoint_dir,
    )
    outcome = tuned_outcome(policy, tuner, steps, resume)
    if tuner.gradients.name == "deepspeed":
        config = tuner.gradients.config
        outcome["zero_stage"] = config["zero_optimization"]["stage"]
        outcome["clipping"] = config["gradient_clipping"]
    return outcome


def auto_case(folder: str) -> dict[str, Any]:
    """``parallel='auto'`` under an accelerate DeepSpeed config (as `accelerate launch` sets)."""
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    return ds_case(folder, "auto")


def _assert_same(got: dict[str, Any], want: dict[str, Any], how: str) -> float:
    """Tuned alike (to float32 rounding: ZeRO reduces in its own order); the largest difference."""
    assert want["moved"] > 1e-3, how  # the steps did something
    assert len(got["history"]) == len(want["history"]), how
    assert_tuned_alike(got, want, how)
    return max(float(np.abs(v - got["parameters"][k]).max()) for k, v in want["parameters"].items())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_zero2_on_two_processes_tunes_as_one(tmp_path: Path) -> None:
    from lm_fixtures import build_gpt2

    folder = str(build_gpt2(tmp_path / "gpt2"))
    torch.set_num_threads(1)
    one = {
        "ema": ds_case(folder),
        "clipped": ds_case(folder, averaging="none", max_grad_norm=0.05),
        "offline": ds_case(folder, proposal="offline"),
        "six": ds_case(folder, steps=6),
    }
    lora = importlib.util.find_spec("peft") is not None
    if lora:
        one["lora"] = lora_case(folder, "none")
    ds_case(folder, steps=3, checkpoint_dir=str(tmp_path / "by-one"))
    adam = dict(optimizer="adam", averaging="none")
    ds_case(folder, steps=3, checkpoint_dir=str(tmp_path / "adam-by-one"), **adam)
    jobs = {
        "ema": (ds_case, (folder, "deepspeed", "sgd", 3, str(tmp_path / "by-two"))),
        "clipped": (ds_case, (folder, "deepspeed", "sgd", 3, None, None, "none", "online", 0.05)),
        "offline": (ds_case, (folder, "deepspeed", "sgd", 3, None, None, "ema", "offline")),
        "resume": (ds_case, (folder, "deepspeed", "sgd", 3, None, str(tmp_path / "by-one"))),
        "auto": (auto_case, (folder,)),
        # peft's LoRA: the engine holds the adapters alone (the frozen base is no parameter of
        # the optimizer).
        **({"lora": (lora_case, (folder, "deepspeed"))} if lora else {}),
        # Adam's moments and step count: written after three steps, and (no step) read and
        # written again, through the partitions.
        "adam": (
            ds_case,
            (folder, "deepspeed", "adam", 3, str(tmp_path / "adam-by-two"), None, "none"),
        ),
        "adam-reload": (
            ds_case,
            (
                folder,
                "deepspeed",
                "adam",
                0,
                str(tmp_path / "adam-again"),
                str(tmp_path / "adam-by-one"),
                "none",
            ),
        ),
    }
    ranks = run_two(tmp_path, jobs)
    for rank in ranks:
        assert rank["ema"]["gradients"] == rank["auto"]["gradients"] == "deepspeed"
        assert rank["ema"]["zero_stage"] == 2
        assert rank["clipped"]["clipping"] == 0.05
    # The clipped run's gradient norms are far above the bound: the clipping acted.
    assert min(m["grad_norm"] for m in one["clipped"]["history"]) > 0.5
    cases = (
        ("ema", "clipped", "offline", "auto", "lora")
        if lora
        else ("ema", "clipped", "offline", "auto")
    )
    for case in cases:
        for r, rank in enumerate(ranks):
            moved = _assert_same(
                rank[case], one["ema" if case == "auto" else case], f"{case}, rank {r}"
            )
            print(f"{case}, rank {r}: largest parameter difference, 1 vs 2 processes: {moved:.3g}")
    # Checkpoints: written once by the two ZeRO-2 ranks (whole, the one-process format) and
    # resumed by one process; one process's checkpoint resumed by two. Both continue as six
    # steps in one process do (the momentum included).
    written = sorted(p.name for p in (tmp_path / "by-two").iterdir())
    assert written == ["latest", "step-00000003"]
    resumed = {
        "one from two": ds_case(folder, resume=str(tmp_path / "by-two")),
        "two from one, rank 0": ranks[0]["resume"],
        "two from one, rank 1": ranks[1]["resume"],
    }
    for how, got in resumed.items():
        _assert_same(got, one["six"], how)
    # Adam's state in the one-process format: read into the partitions and gathered back
    # exactly; after three steps the same as one process's (its moments to float32 noise).
    want = _optimizer_state(tmp_path / "adam-by-one")
    assert set(want["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    _assert_same_state(_optimizer_state(tmp_path / "adam-again"), want, steps=0)
    _assert_same_state(_optimizer_state(tmp_path / "adam-by-two"), want, steps=3)


def _optimizer_state(root: Path) -> dict[str, Any]:
    """The optimizer state a checkpoint folder's newest checkpoint holds."""
    from safetensors.torch import load_file

    from disco.tuners.checkpoint import decode, find

    folder = find(root)
    assert folder is not None
    document = json.loads((folder / "state.json").read_text())
    tensors = load_file(folder / "training.safetensors")
    return decode(document["state"], tensors)["optimizer"]  # type: ignore[no-any-return]


def _assert_same_state(got: dict[str, Any], want: dict[str, Any], steps: int) -> None:
    """Optimizer state equal (``steps`` 0: read and written back, exactly) or after ``steps``
    steps whose gradients were summed in another order (to their float32 rounding)."""
    assert got["param_groups"] == want["param_groups"]
    assert set(got["state"]) == set(want["state"])
    # Adam's moments are sums of gradients, whose float32 noise is a few units of the terms
    # summed, not of each entry: an entry whose gradient cancels to zero in exact arithmetic
    # (an attention key bias) is all noise. The scale of each moment is therefore its largest
    # entry anywhere in the model.
    scales = {
        key: max(float(entry[key].abs().max()) for entry in want["state"].values())
        for key in ("exp_avg", "exp_avg_sq")
    }
    for index, entry in want["state"].items():
        assert set(got["state"][index]) == set(entry)
        for key, value in entry.items():
            mine = got["state"][index][key]
            if steps == 0 or not value.is_floating_point() or key == "step":
                assert torch.equal(mine, value), key
            else:
                assert_close_after_steps(
                    mine.numpy(), value.numpy(), steps=steps, scale=scales[key], what=key
                )


def test_the_deepspeed_settings_the_tuner_cannot_honour_are_refused() -> None:
    from disco.parallel.deepspeed import _check_deepspeed_config

    _check_deepspeed_config({"zero_optimization": {"stage": 2}})
    _check_deepspeed_config({"zero_optimization": {"stage": 1}})
    refused = {
        "stage 3 shards the parameters": {"zero_optimization": {"stage": 3}},
        "stage 0: use stage 2": {"zero_optimization": {"stage": 0}},
        "'optimizer' section": {"zero_optimization": {"stage": 2}, "optimizer": {}},
        "'scheduler' section": {"zero_optimization": {"stage": 2}, "scheduler": {}},
        "bf16 enabled": {"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}},
        "offload_optimizer": {
            "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}
        },
    }
    for message, config in refused.items():
        with pytest.raises(ValueError, match=message):
            _check_deepspeed_config(config)


def _docs_zero2_file() -> str:
    """The accelerate DeepSpeed ZeRO-2 file docs/scale.md shows (the one this test launches)."""
    from markdown_pages import fenced_blocks

    blocks = fenced_blocks("docs/scale.md", "More than one GPU or node", "yaml")
    found = [b for b in blocks if "distributed_type: DEEPSPEED" in b]
    assert len(found) == 1, "docs/scale.md should show one accelerate DeepSpeed file"
    return found[0]


@pytest.mark.slow
def test_accelerate_launch_with_the_docs_zero2_file_writes_the_one_process_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from disco import cli
    from test_distributed_cli import _small_config

    config = _small_config(tmp_path)
    (tmp_path / "zero2.yaml").write_text(_docs_zero2_file())
    accelerate = Path(sys.executable).with_name("accelerate")
    done = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--config_file",
            "zero2.yaml",
            "--main_process_port",
            str(_free_port()),
            "-m",
            "disco",
            "run",
            str(config),
            "--out",
            "two",
            "--allow-imports",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # accelerate set the processes up for DeepSpeed (its communication op is loaded on CPUs
    # only then), so parallel='auto' tuned with ZeRO-2 (test_zero2_... checks that choice).
    assert "deepspeed_shm_comm_op" in done.stdout + done.stderr
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    torch.set_num_threads(1)
    assert cli.main(["run", str(config), "--out", str(tmp_path / "one"), "--allow-imports"]) == 0
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert_reports_alike(two, one)  # ZeRO reduces in float32, in its own order
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == [
        "latest",
        "step-00000002",
    ]
