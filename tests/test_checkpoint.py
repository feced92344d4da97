"""Checkpoints: pickle-free, verified on reading, and damaged ones skipped for the last intact one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from disco.distributions import EnumerableLM
from disco.scorers import BooleanScorer, ExponentialScorer
from disco.tuners import JSLoss, Tuner
from disco.tuners import checkpoint as ckpt

HAS_A = BooleanScorer(lambda s, c: "a" in s.text.split(), name="has_a")
SETTINGS = dict(
    n_steps=4,
    samples_per_context=16,
    learning_rate=0.05,
    proposal="offline",
    seed=5,
    scheduler="cosine",
    keep_checkpoints=3,
)


def fresh(**settings: object) -> Tuner:
    base = EnumerableLM(tokens=("a", "b", "c"), max_length=3, seed=2)
    target = base * ExponentialScorer([HAS_A], [1.0])
    return Tuner(base.clone(), target, JSLoss(), **{**SETTINGS, **settings})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Tuner]:
    """Four steps with a checkpoint after each (the last three kept), and the finished tuner."""
    root = tmp_path_factory.mktemp("ckpt")
    tuner = fresh(checkpoint_dir=str(root), checkpoint_interval=1)
    tuner.tune()
    return root, tuner


def copy(run: tuple[Path, Tuner], tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(run[0], tmp_path / "ckpt")
    return tmp_path / "ckpt"


def weights(tuner: Tuner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in tuner.parameters.values()]


def test_encode_decode_round_trips_tuples_int_keys_tensors_and_non_finite_floats() -> None:
    value = {
        "a": (1, 2.5, None, "x"),
        "b": {0: torch.arange(3.0), 7: [float("inf"), float("-inf")]},
        "c": [np.float64(0.5), True, {"$tensor": "not a tag"}],
        "d": random.getstate(),
    }
    tensors: dict[str, torch.Tensor] = {}
    encoded = json.loads(json.dumps(ckpt.encode(value, tensors)))
    back = ckpt.decode(encoded, tensors)
    assert back["a"] == value["a"] and back["d"] == value["d"]
    assert list(back["b"]) == [0, 7] and torch.equal(back["b"][0], torch.arange(3.0))
    assert back["b"][7] == [float("inf"), float("-inf")] and back["c"] == [
        0.5,
        True,
        {"$tensor": "not a tag"},
    ]
    with pytest.raises(TypeError, match="cannot hold a function"):
        ckpt.encode({"f": lambda: 0}, {})


def test_a_checkpoint_holds_no_pickle(run: tuple[Path, Tuner]) -> None:
    root, tuner = run
    names = sorted(p.name for p in root.iterdir())
    assert names == ["latest", "step-00000002", "step-00000003", "step-00000004"]
    files = sorted(p.name for p in (root / "step-00000004").iterdir())
    assert files == [
        "policy.safetensors",
        "proposal.safetensors",
        "state.json",
        "training.safetensors",
    ]
    resumed = fresh()
    assert resumed.load_checkpoint(root) == root / "step-00000004"
    assert resumed.step_count == 4
    assert all(torch.equal(a, b) for a, b in zip(weights(tuner), weights(resumed)))
    assert (
        resumed.optimizer.state_dict()["param_groups"]
        == tuner.optimizer.state_dict()["param_groups"]
    )


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda d: (d / "policy.safetensors").write_bytes(b"\x00" * 10), "policy.safetensors"),
        (lambda d: _truncate(d / "training.safetensors"), "training.safetensors"),
        (lambda d: _truncate(d / "proposal.safetensors"), "proposal.safetensors"),
        (lambda d: (d / "state.json").write_text("{not json"), "state.json"),
        (lambda d: _truncate(d / "state.json"), "state.json"),
        (lambda d: (d / "training.safetensors").unlink(), "training.safetensors"),
        (lambda d: _flip_a_byte(d / "policy.safetensors"), "policy.safetensors"),
        (lambda d: _drop_key(d / "state.json", "optimizer"), "state.json"),
    ],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_intact_one_naming_the_file(
    run: tuple[Path, Tuner], tmp_path: Path, damage: object, named: str
) -> None:
    root = copy(run, tmp_path)
    damage(root / "step-00000004")  # type: ignore[operator]
    expected = fresh()
    expected.load_checkpoint(root / "step-00000003")
    resumed = fresh()
    with pytest.warns(ckpt.CheckpointWarning, match=f"step-00000004.*{named}.*step-00000003"):
        assert resumed.load_checkpoint(root) == root / "step-00000003"
    assert resumed.step_count == 3
    assert all(torch.equal(a, b) for a, b in zip(weights(expected), weights(resumed)))
    resumed.tune()  # and it finishes from there
    assert resumed.step_count == 4


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _drop_key(path: Path, key: str) -> None:
    document = json.loads(path.read_text())
    del document["state"][key]
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("pointer", "message"),
    [
        ("", "is empty"),
        ("../../other/checkpoints/step-00000009", "refused"),
        ("/etc", "refused"),
        ("step-00000099", "does not exist"),
    ],
)
def test_a_bad_latest_pointer_is_never_followed(
    run: tuple[Path, Tuner], tmp_path: Path, pointer: str, message: str
) -> None:
    root = copy(run, tmp_path)
    outside = tmp_path / "other" / "checkpoints" / "step-00000009"
    outside.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(root / "step-00000002", outside)  # a valid checkpoint, in the wrong place
    (root / "latest").write_text(pointer)
    resumed = fresh()
    with pytest.warns(ckpt.CheckpointWarning, match=message):
        assert resumed.load_checkpoint(root) == root / "step-00000004"


def test_nothing_intact_is_an_error_naming_every_bad_file(
    run: tuple[Path, Tuner], tmp_path: Path
) -> None:
    root = copy(run, tmp_path)
    for folder in root.glob("step-*"):
        _truncate(folder / "policy.safetensors")
    tuner = fresh()
    before = weights(tuner)
    with pytest.raises(
        ckpt.CheckpointError, match=r"no intact checkpoint.*step-00000004.*step-00000002"
    ):
        tuner.load_checkpoint(root)
    assert tuner.step_count == 0 and all(torch.equal(a, b) for a, b in zip(before, weights(tuner)))
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        fresh().load_checkpoint(tmp_path / "empty-or-missing")


def test_a_checkpoint_of_another_policy_is_refused(run: tuple[Path, Tuner]) -> None:
    base = EnumerableLM(tokens=("a", "b", "c", "d"), max_length=3, seed=2)
    other = Tuner(base.clone(), base * ExponentialScorer([HAS_A], [1.0]), JSLoss(), **SETTINGS)
    with pytest.raises(ckpt.CheckpointError, match="shape"):
        other.load_checkpoint(run[0] / "step-00000004")


def test_a_failed_write_leaves_the_earlier_checkpoints_and_pointer(
    run: tuple[Path, Tuner], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy(run, tmp_path)
    tuner = fresh(checkpoint_dir=str(root))
    tuner.load_checkpoint(root)
    tuner.step_count = 5
    import safetensors.torch

    real = safetensors.torch.save_file

    def full_disk(tensors: object, path: object, *args: object, **kwargs: object) -> None:
        if str(path).endswith("training.safetensors"):
            Path(str(path)).write_bytes(b"\x00" * 7)
            raise OSError(28, "No space left on device")
        real(tensors, path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(OSError, match="No space"):
        tuner.save_checkpoint()
    assert sorted(p.name for p in root.iterdir()) == [
        "latest",
        "step-00000002",
        "step-00000003",
        "step-00000004",
    ]
    assert (root / "latest").read_text() == "step-00000004"
    assert fresh().load_checkpoint(root) == root / "step-00000004"


def test_saving_the_same_step_twice_replaces_it_whole(
    run: tuple[Path, Tuner], tmp_path: Path
) -> None:
    root = copy(run, tmp_path)
    tuner = fresh(checkpoint_dir=str(root))
    tuner.load_checkpoint(root)
    assert tuner.save_checkpoint() == root / "step-00000004"
    assert not list(root.glob(".*-*"))  # no temporary or set-aside folder left behind
    assert fresh().load_checkpoint(root) == root / "step-00000004"
