import json
import math
import os
import random
import zlib
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "slow", max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The suite's models are tiny: one intra-op thread avoids thread contention that makes small
# torch ops orders of magnitude slower on a busy 2-core machine.
torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that use a module's several-process fixture (``MULTIPROCESS_FIXTURES``)."""
    for item in items:
        fixtures = getattr(getattr(item, "module", None), "MULTIPROCESS_FIXTURES", ())
        if any(name in getattr(item, "fixturenames", ()) for name in fixtures):
            item.add_marker(pytest.mark.multiprocess)


@pytest.fixture(autouse=True)
def _seeded_by_test_name(request):
    """Each test starts from generators seeded by its own name: a statistical test's draw no
    longer depends on which tests ran before it (or on -k), so it passes or fails the same way
    in every run, alone or in the suite."""
    seed = zlib.crc32(request.node.nodeid.encode())
    if os.environ.get("DISCO_SOAK_VARY_SEED") == "1":  # scripts/soak.sh: another seed each run
        seed += int(os.environ.get("DISCO_SOAK_RUN", "0"))
    torch.manual_seed(seed)
    random.seed(seed)


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory):
    """A tiny BERT sentiment classifier (random weights, word-level vocabulary) saved to disk."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "film", "very", "the", "a"]
    words += ["LORD", "God", "and", "of", "unto", "said", "Israel", "king", "son", "people"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    model = BertForSequenceClassification(config)
    path = tmp_path_factory.mktemp("classifier")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def gpt2_path(tmp_path_factory):
    """A tiny GPT-2 (lm_fixtures' word-level vocabulary) saved to disk, shared by the suite."""
    from lm_fixtures import build_gpt2

    return build_gpt2(tmp_path_factory.mktemp("gpt2"))


# ------------------------------------------------------------------ bounds for rounding-level agreement
#
# Results that cross processes, batch shapes or precisions are compared through these helpers, so
# every bound is stated once and follows from the float type and the quantity's own scale. A claim
# of exactness (the same computation in the same order) is tested with equality instead.

ULPS_PER_STEP = 32
"""Units of roundoff an optimizer step may add to a parameter when the gradient is summed in
another order: the sum itself differs by a few units of the terms' magnitude, the update carries
that relative difference, each run rounds the updated parameter once more, and the next step's
gradient, taken at parameters that differ, carries the difference on (a large learning rate makes
it grow). About six times the largest seen a step (LoRA adapters at learning rate 0.5: 5.6)."""


def unit_roundoff(dtype: Any) -> float:
    """The machine epsilon of a numpy or torch float type."""
    if isinstance(dtype, torch.dtype):
        return float(torch.finfo(dtype).eps)
    return float(np.finfo(dtype).eps)


def _record_use(what: str, used: float) -> None:
    """Append how much of a bound a comparison used to ``$DISCO_BOUND_LOG`` (the soak reads it)."""
    log = os.environ.get("DISCO_BOUND_LOG")
    if log:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
        with open(log, "a") as f:
            f.write(json.dumps({"test": test, "what": what, "used": used}) + "\n")


def assert_within(got: Any, want: Any, bound: Any, what: str) -> float:
    """``|got - want| <= bound`` elementwise (NaN only against NaN); the largest used fraction."""
    got_a = np.asarray(got, dtype=np.float64)
    want_a = np.asarray(want, dtype=np.float64)
    assert got_a.shape == want_a.shape, f"{what}: shape {got_a.shape} against {want_a.shape}"
    both_nan = np.isnan(got_a) & np.isnan(want_a)
    diff = np.where(both_nan, 0.0, np.abs(got_a - want_a))
    bound_a = np.broadcast_to(np.asarray(bound, dtype=np.float64), diff.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(diff == 0, 0.0, diff / bound_a)
    used = float(np.max(fraction)) if fraction.size else 0.0
    _record_use(what, used)
    worst = np.unravel_index(int(np.argmax(fraction)), fraction.shape) if fraction.size else ()
    assert used <= 1.0, (
        f"{what}: differs by {diff[worst]:.3g} at {worst} (want {want_a[worst]:.6g}), "
        f"{used:.2f} times its bound {bound_a[worst]:.3g}"
    )
    return used


def assert_close_after_steps(
    got: Any, want: Any, *, steps: int, what: str, dtype: Any = np.float32, scale: Any = None
) -> float:
    """Parameters (or values computed from them) of two runs whose gradients were summed in
    different orders, after ``steps`` optimizer steps in ``dtype``.

    Bound: ``ULPS_PER_STEP * steps * eps(dtype) * (|want| + scale)``; ``scale`` (default: the
    RMS of ``want``) keeps entries near zero from asking for a relative agreement their tensor's
    rounding cannot give.
    """
    want_a = np.asarray(want, dtype=np.float64)
    if scale is None:
        scale = float(np.sqrt(np.mean(want_a**2))) if want_a.size else 0.0
    bound = ULPS_PER_STEP * max(steps, 1) * unit_roundoff(dtype) * (np.abs(want_a) + scale)
    return assert_within(got, want_a, bound, what)


def log_prob_scale(length: int, vocabulary: int) -> float:
    """The magnitude of a sequence's log-probability: ``length`` tokens of at most log(V) nats."""
    return length * math.log(vocabulary)


ULPS_PER_FORWARD = 16
"""Units of roundoff allowed between two float32 computations of a sequence's log-probability
by different routes (another batch shape or padding, sampling against scoring, a token-by-token
reference): each of its terms is a log-softmax of logits from the same layers, summed in another
blocking; counted in units of the sequence log-probability's magnitude."""


def assert_log_probs_close(got: Any, want: Any, lm: Any, what: str = "log-probability") -> float:
    """Sequence log-probabilities of ``lm`` computed twice by different float routes."""
    dtype = next(lm.model.parameters()).dtype
    scale = log_prob_scale(lm.length, lm.vocab_size)
    bound = ULPS_PER_FORWARD * unit_roundoff(dtype) * scale
    values = [v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for v in (got, want)]
    return assert_within(values[0], values[1], bound, what)


EXTRAS = {
    "accelerate": "distributed",
    "deepspeed": "deepspeed",
    "peft": "lora",
    "datasets": "datasets",
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "neptune": "neptune",
}
"""The optional module each extra of pyproject.toml brings."""


def require_extra(module: str) -> Any:
    """Import an optional extra's module, or skip the test naming the extra that brings it."""
    extra = EXTRAS[module]
    return pytest.importorskip(
        module, reason=f"needs the '{extra}' extra: pip install 'disco-control[{extra}]'"
    )


@pytest.fixture
def fresh_wandb() -> Any:
    """wandb keeps its settings in a process-wide singleton made at its first run: start and leave
    each test that runs it with none, so one test's environment cannot reach the next."""
    wandb = require_extra("wandb")
    wandb.teardown()
    yield wandb
    wandb.teardown()
