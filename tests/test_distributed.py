"""Data-parallel runs give the one-process results (2 processes, gloo, spawned by the test).

The two-process group is started once per module (spawning costs seconds); it runs every
scenario and saves what it got, and each test compares that with a one-process run here.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from conftest import assert_close_after_steps, log_prob_scale
from disco import distributed
from disco.distributed import World, chunk_seed, plan_chunks
from disco.distributions import ContextDistribution, EnumerableLM
from disco.scorers import BooleanScorer, ExponentialScorer
from disco.tuners import JSLoss, KLLoss, Tuner
from lm_fixtures import SPECIAL, WORDS

HERE = Path(__file__).parent
STEPS = 3


def has_a(sample: Any, context: Any) -> bool:
    return "a" in sample.text.split()


HAS_A = BooleanScorer(has_a, name="has_a")

# ----------------------------------------------------------------------------------- scenarios
# Each returns plain values; the same function runs in one process and on every rank of two.


def _problem(contexts: tuple[str, ...] = ("",)) -> tuple[Any, Any]:
    base = EnumerableLM(tokens=("a", "b", "c"), max_length=3, seed=2, contexts=contexts)
    return base, base * ExponentialScorer([HAS_A], [1.2])


TUNER_CASES: dict[str, dict[str, Any]] = {
    "online-dpg": {"loss": KLLoss, "proposal": "online"},
    "offline-dpg": {"loss": KLLoss, "proposal": "offline", "proposal_update_interval": 1},
    "js-two-contexts": {"loss": JSLoss, "proposal": "online", "contexts": ("x", "y")},
    "averaged": {"loss": KLLoss, "proposal": "online", "averaging": "ema"},
}


def _tuner(case: str, checkpoint_dir: str | None = None) -> Tuner:
    settings = dict(TUNER_CASES[case])
    loss, contexts = settings.pop("loss"), settings.pop("contexts", ("",))
    base, target = _problem(contexts)
    where = (
        {"context_distribution": ContextDistribution(list(contexts)), "contexts_per_step": 2}
        if len(contexts) > 1
        else {}
    )
    return Tuner(
        base.clone(),
        target,
        loss(),
        samples_per_context=40,
        sampling_batch_size=8,  # 5 chunks a context: uneven between 2 ranks
        scoring_batch_size=3,
        learning_rate=0.1,
        seed=7,
        features=(HAS_A,),
        n_steps=2 * STEPS,
        checkpoint_dir=checkpoint_dir,
        **where,
        **settings,
    )


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


def tune_case(case: str) -> dict[str, Any]:
    tuner = _tuner(case)
    tuner.tune(n_steps=STEPS)
    return _outcome(tuner)


def resume_case(folder: str) -> dict[str, Any]:
    """Load a checkpoint of the online DPG case taken after STEPS steps, run STEPS more."""
    tuner = _tuner("online-dpg")
    tuner.load_checkpoint(folder)
    tuner.tune(n_steps=STEPS)
    return _outcome(tuner)


def checkpoint_case(folder: str) -> dict[str, Any]:
    tuner = _tuner("online-dpg", checkpoint_dir=folder)
    tuner.tune(n_steps=STEPS)  # saves at the end
    return _outcome(tuner)


def failing_feature_case() -> str:
    """A feature that fails on one sample only (so on one rank only): every rank must raise."""

    def fragile(sample: Any, context: Any) -> bool:
        if sample.text == "c c c":
            raise ValueError("fragile feature: cannot score 'c c c'")
        return True

    base, target = _problem()
    tuner = Tuner(
        base.clone(),
        target,
        samples_per_context=64,
        sampling_batch_size=4,
        seed=3,
        features=(BooleanScorer(fragile, name="fragile"),),
    )
    try:
        tuner.tune(n_steps=5)
    except ValueError as err:
        return str(err)
    return "no error"


def parallel_errors_case() -> list[str]:
    """Wrappers asked for where they cannot apply: refused with a reason on every rank."""
    base, target = _problem()
    messages = []
    for settings in (
        {"parallel": "ddp"},
        {"parallel": "fsdp", "averaging": "none"},
        {"parallel": "fsdp"},
        {"parallel": "deepspeed"},
    ):
        try:
            Tuner(base.clone(), target, **settings)
            messages.append("no error")
        except ValueError as err:
            messages.append(str(err))
    # Without accelerate (an optional extra): 'auto' sums explicitly, 'ddp' says what to install.
    from unittest import mock

    with mock.patch("disco.parallel.importlib.util.find_spec", return_value=None):
        messages.append(Tuner(base.clone(), target, parallel="auto").gradients.name)
        try:
            Tuner(base.clone(), target, parallel="ddp")
            messages.append("no error")
        except ValueError as err:
            messages.append(str(err))
    return messages


def has_b(sample: Any, context: Any) -> bool:
    return "b" in sample.text.split()


def constrain_case() -> dict[str, Any]:
    base, _ = _problem(("x", "y"))
    ebm = base.constrain(
        [HAS_A, BooleanScorer(has_b, name="has_b")],
        [0.6, 0.3],
        contexts=["x", "y"],
        n_samples=300,
        sampling_size=16,
        seed=11,
    )
    report = ebm.fit_report
    return {
        "coefficients": report.coefficients,
        "moments": report.moments,
        "log_z": report.log_z,
        "n_samples": report.n_samples,
    }


def qrs_case() -> dict[str, Any]:
    from disco.samplers import QuasiRejectionSampler

    base, target = _problem()
    sampler = QuasiRejectionSampler(target, base, beta=2.0, seed=5)
    drawn = sampler.sample_n(50, sampling_size=7, progress=False)
    return {
        "samples": [s.token_ids for s in drawn.samples],
        "log_p": drawn.target_log_scores.numpy(),
        "proposed": sampler.statistics("").proposed,
        "accepted": sampler.statistics("").accepted,
        "one": [s.token_ids for s in sampler.sample("", 9).samples],
    }


def qrs_shards_case(folder: str) -> dict[str, Any]:
    """The QRS case's draw written as shards instead of gathered."""
    from disco.samplers import QuasiRejectionSampler
    from disco.samplers.shards import read_shards

    base, target = _problem()
    sampler = QuasiRejectionSampler(target, base, beta=2.0, seed=5)
    share = sampler.sample_n(50, sampling_size=7, progress=False, shard_dir=folder)
    return {
        "share": [s.token_ids for s in share.samples],
        "records": read_shards(folder),
        "files": sorted(p.name for p in Path(folder).iterdir()),
    }


def imh_case() -> dict[str, Any]:
    from disco.samplers import IMHSampler

    base, target = _problem()
    sampler = IMHSampler(target, base, seed=5)
    drawn = sampler.sample_n(40, burn_in=3, thinning=2, sampling_size=8, progress=False)
    one = sampler.sample("", 9)  # the chain goes on from where sample_n left it
    chain = sampler.statistics("")
    return {
        "samples": [s.token_ids for s in drawn.samples],
        "log_p": drawn.target_log_scores.numpy(),
        "one": [s.token_ids for s in one.samples],
        "steps": chain.steps,
        "accepted": chain.accepted,
        "autocorrelation": chain.autocorrelation,
    }


def estimator_case() -> dict[str, Any]:
    from disco.samplers import QRSEstimator

    base, target = _problem(("x", "y"))
    estimator = QRSEstimator(
        target,
        base,
        contexts=["x", "y"],
        n_samples=300,
        sampling_size=16,
        seed=2,
        progress=False,
    )
    return {
        "beta": estimator.beta_for_acceptance_rate(0.4),
        "kl": estimator.divergence_at_beta(1.5),
        "ratios": estimator.log_ratios(1),
    }


SCENARIOS = {
    **{f"tune:{case}": (tune_case, (case,)) for case in TUNER_CASES},
    "failing": (failing_feature_case, ()),
    "parallel-errors": (parallel_errors_case, ()),
    "constrain": (constrain_case, ()),
    "qrs": (qrs_case, ()),
    "imh": (imh_case, ()),
    "estimator": (estimator_case, ()),
}

# ----------------------------------------------------------------------------- the 2-process run


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
    torch.distributed.init_process_group("gloo", init_method="env://")
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


MULTIPROCESS_FIXTURES = ("two",)  # conftest marks the tests that use it


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("two")
    one_checkpoint = tmp / "written-by-one"
    checkpoint_case(str(one_checkpoint))
    jobs = dict(SCENARIOS)
    jobs["checkpoint"] = (checkpoint_case, (str(tmp / "written-by-two"),))
    jobs["resume"] = (resume_case, (str(one_checkpoint),))
    jobs["shards"] = (qrs_shards_case, (str(tmp / "shards-by-two"),))
    ranks = run_two(tmp, jobs)
    return {"ranks": ranks, "tmp": tmp}


# ------------------------------------------------------------------------------------ the tests


def assert_same(got: dict[str, Any], want: dict[str, Any], what: str) -> None:
    """Two float64 runs of the enumerable problem, their gradients summed in other orders."""
    steps = len(want["history"])
    scale = log_prob_scale(3, 4)  # the problem's sequences: 3 tokens of 3 words and EOS
    for name, value in want["parameters"].items():
        assert_close_after_steps(
            got["parameters"][name], value, steps=steps, dtype=np.float64, what=f"{what}: {name}"
        )
    assert len(got["history"]) == len(want["history"])
    for step, (g, w) in enumerate(zip(got["history"], want["history"]), 1):
        assert g.keys() == w.keys()
        for key in w:
            assert_close_after_steps(
                g[key], w[key], steps=step, dtype=np.float64, scale=scale, what=f"{what}: {key}"
            )
    assert got["log_z"].keys() == want["log_z"].keys()
    for key, value in want["log_z"].items():
        assert_close_after_steps(
            got["log_z"][key], value, steps=steps, dtype=np.float64, scale=scale, what=what
        )


@pytest.mark.parametrize("case", list(TUNER_CASES))
def test_two_processes_tune_as_one(two: dict[str, Any], case: str) -> None:
    torch.set_num_threads(1)
    want = tune_case(case)
    for rank in two["ranks"]:
        assert_same(rank[f"tune:{case}"], want, case)
    # Before the first update (the gradients' summation order aside, everything is gathered
    # and reduced in chunk order), the statistics are bitwise those of one process.
    first = {k: v for k, v in two["ranks"][1][f"tune:{case}"]["history"][0].items()}
    for key in ("log_z", "kl_target_proposal", "tv_target_proposal", "ess", "baseline"):
        assert first[key] == want["history"][0][key], key


def test_a_checkpoint_resumes_under_another_world_size(two: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    reference = _tuner("online-dpg")
    reference.tune(n_steps=2 * STEPS)
    want = _outcome(reference)
    # Written by one process, resumed by two.
    for rank in two["ranks"]:
        assert_same(rank["resume"], want, "written by one, resumed by two")
    # Written (once) by two processes, resumed by one.
    folder = two["tmp"] / "written-by-two"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("step-")) == [
        f"step-{STEPS:08d}"
    ]
    assert_same(resume_case(str(folder)), want, "written by two, resumed by one")


def test_an_error_on_one_rank_is_raised_on_every_rank(two: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    messages = [rank["failing"] for rank in two["ranks"]]
    assert messages[0] == messages[1] == "fragile feature: cannot score 'c c c'"
    assert failing_feature_case() == messages[0]


def test_a_wrapper_that_cannot_apply_is_refused(two: dict[str, Any]) -> None:
    for rank in two["ranks"]:
        ddp, fsdp, averaged, deepspeed, without, ddp_without = rank["parallel-errors"]
        assert without == "none"
        assert "accelerate, which is not installed: pip install" in ddp_without
        assert "parallel='ddp' wraps a Hugging Face model; EnumerableLM has none" in ddp
        assert "parallel='fsdp' shards a Hugging Face model; EnumerableLM has none" in fsdp
        assert "parallel='fsdp' tunes online without averaging" in averaged
        assert (
            "parallel='deepspeed' (DeepSpeed) runs a Hugging Face model; EnumerableLM" in deepspeed
        )
    # One process has nothing to wrap: every setting runs; a setting outside the list does not.
    assert parallel_errors_case() == ["no error"] * 4 + ["none", "no error"]
    with pytest.raises(ValueError, match="parallel='dp' is not one of"):
        Tuner(*_problem(), parallel="dp")


def test_constrain_fits_the_one_process_coefficients(two: dict[str, Any]) -> None:
    want = constrain_case()
    assert want["n_samples"] == 300
    for rank in two["ranks"]:
        got = rank["constrain"]
        np.testing.assert_allclose(got["coefficients"], want["coefficients"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got["moments"], want["moments"], rtol=0, atol=1e-12)
        assert got["log_z"] == pytest.approx(want["log_z"], abs=1e-12)


def test_qrs_accepts_the_one_process_samples(two: dict[str, Any]) -> None:
    want = qrs_case()
    assert len(want["samples"]) == 50 and want["proposed"] > 50
    for rank in two["ranks"]:
        got = rank["qrs"]
        assert got["samples"] == want["samples"]
        np.testing.assert_array_equal(got["log_p"], want["log_p"])
        assert (got["proposed"], got["accepted"]) == (want["proposed"], want["accepted"])
        assert got["one"] == want["one"]


def test_qrs_shards_make_the_one_process_draw(two: dict[str, Any], tmp_path: Path) -> None:
    want = qrs_case()
    one = qrs_shards_case(str(tmp_path / "by-one"))
    assert one["share"] == want["samples"]
    assert one["files"] == ["index.json", "shard-00000-of-00001.jsonl"]
    shares = [rank["shards"]["share"] for rank in two["ranks"]]
    assert all(shares) and len(shares[0]) + len(shares[1]) == len(want["samples"])
    for got in (one, *(rank["shards"] for rank in two["ranks"])):
        assert [tuple(r["token_ids"]) for r in got["records"]] == want["samples"]
        np.testing.assert_array_equal(
            [r["target_log_score"] for r in got["records"]], want["log_p"]
        )
    files = two["ranks"][0]["shards"]["files"]
    assert files == ["index.json", "shard-00000-of-00002.jsonl", "shard-00001-of-00002.jsonl"]


def test_a_damaged_shard_folder_is_refused(tmp_path: Path) -> None:
    from disco.samplers.shards import read_shards

    with pytest.raises(ValueError, match=r"holds no index\.json"):
        read_shards(tmp_path)
    qrs_shards_case(str(tmp_path))
    shard = tmp_path / "shard-00000-of-00001.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text("".join(lines[:-1]))  # cut short
    with pytest.raises(ValueError, match="holds 49 samples where the index says 50"):
        read_shards(tmp_path)


def test_imh_runs_the_one_process_chain(two: dict[str, Any]) -> None:
    want = imh_case()
    # 40 states at spacing 2 after 3 burnt in: 82 steps, in 11 chunks of 8 (on 2 ranks, the
    # last round's second chunk is drawn but must not reach the chain), then 9 more.
    assert len(want["samples"]) == 40 and want["steps"] == 88 + 9
    assert 0 < want["accepted"] < want["steps"]
    for rank in two["ranks"]:
        got = rank["imh"]
        assert got["samples"] == want["samples"] and got["one"] == want["one"]
        np.testing.assert_array_equal(got["log_p"], want["log_p"])
        assert (got["steps"], got["accepted"]) == (want["steps"], want["accepted"])
        np.testing.assert_array_equal(got["autocorrelation"], want["autocorrelation"])


def test_the_estimator_index_is_global(two: dict[str, Any]) -> None:
    want = estimator_case()
    for rank in two["ranks"]:
        got = rank["estimator"]
        assert got["beta"] == want["beta"] and got["kl"] == want["kl"]
        np.testing.assert_array_equal(got["ratios"], want["ratios"])


TINY_LENGTH = 5
TINY_VOCABULARY = len(SPECIAL) + len(WORDS)  # lm_fixtures' tokenizer


def tiny_gpt2_tuner(folder: str, context: str = "", **settings: Any) -> tuple[Any, Tuner]:
    """A tiny GPT-2 policy and its tuner, as every transformer case here runs them."""
    from disco.distributions import LMDistribution

    base = LMDistribution(folder, length=TINY_LENGTH)
    policy = LMDistribution(folder, length=TINY_LENGTH, freeze=False)
    defaults: dict[str, Any] = dict(
        samples_per_context=24,
        sampling_batch_size=8,  # three chunks: rank 0 holds two, rank 1 one
        scoring_batch_size=4,
        # Adam would turn the float32 rounding noise of gradients that are zero in exact
        # arithmetic (attention key biases) into full-size steps: SGD shows the data-parallel
        # error itself.
        optimizer="sgd",
        momentum=0.5,  # a moment per parameter: the checkpoints carry sharded optimizer state
        learning_rate=0.1,
        seed=3,
        features=(HAS_A,),
        proposal_update_interval=1,
    )
    tuner = Tuner(
        policy,
        base * ExponentialScorer([HAS_A], [1.5]),
        context=context,
        **(defaults | settings),
    )
    return policy, tuner


def lm_case(
    folder: str,
    parallel: str = "auto",
    averaging: str = "ema",
    steps: int = 3,
    checkpoint_dir: str | None = None,
    resume: str | None = None,
    proposal: str = "online",
    context: str = "",
) -> dict[str, Any]:
    policy, tuner = tiny_gpt2_tuner(
        folder,
        context,
        parallel=parallel,
        averaging=averaging,
        checkpoint_dir=checkpoint_dir,
        proposal=proposal,
    )
    outcome = tuned_outcome(policy, tuner, steps, resume, context)
    outcome["sharded"] = [
        isinstance(v, torch.distributed.tensor.DTensor) for v in tuner.parameters.values()
    ]
    return outcome


def tuned_outcome(
    policy: Any,
    tuner: Tuner,
    steps: int,
    resume: str | None,
    context: str = "",
    sample_alone: bool = True,
) -> dict[str, Any]:
    """Resume (when asked), tune ``steps`` steps, and report what the tuner ended with.

    ``sample_alone``: rank 0 then samples from the tuned policy by itself (not for a policy
    that stays sharded, whose every forward is a collective).
    """
    if resume is not None:
        tuner.load_checkpoint(resume)
    start = {k: _full(v) for k, v in tuner.parameters.items()}
    tuner.tune(n_steps=steps)
    if sample_alone and tuner.world.is_main:  # no collective left in the tuned policy
        assert len(policy.sample(context, 3)[0]) == 3
    outcome = _outcome(tuner)
    outcome["gradients"] = tuner.gradients.name
    outcome["moved"] = max(
        float(np.abs(v - start[k]).max()) for k, v in outcome["parameters"].items()
    )
    return outcome


def lora_case(folder: str, parallel: str) -> dict[str, Any]:
    """A LoRA policy (peft) whose target is its own base: the adapters alone are trained."""
    import peft
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from disco.distributions import LMDistribution

    torch.manual_seed(0)  # the adapters' initialisation
    model = peft.get_peft_model(
        AutoModelForCausalLM.from_pretrained(folder),
        peft.LoraConfig(
            r=2, lora_alpha=4, target_modules=["c_attn"], lora_dropout=0.0, fan_in_fan_out=True
        ),
    )
    policy = LMDistribution(model, AutoTokenizer.from_pretrained(folder), length=5, freeze=False)
    tuner = Tuner(
        policy,
        policy.without_adapters() * ExponentialScorer([HAS_A], [1.5]),
        samples_per_context=24,
        sampling_batch_size=8,
        scoring_batch_size=4,
        optimizer="sgd",
        learning_rate=0.5,
        seed=3,
        parallel=parallel,
        averaging="none",
    )
    start = {k: _full(v) for k, v in tuner.parameters.items()}
    tuner.tune(n_steps=3)
    outcome = _outcome(tuner)
    outcome["gradients"] = tuner.gradients.name
    outcome["moved"] = max(
        float(np.abs(v - start[k]).max()) for k, v in outcome["parameters"].items()
    )
    return outcome


def fsdp_config_case(folder: str) -> dict[str, Any]:
    """``parallel='auto'`` under an accelerate FSDP config (as `accelerate launch` sets it)."""
    os.environ["ACCELERATE_USE_FSDP"] = "true"
    try:
        return lm_case(folder, "auto", "none")
    finally:
        del os.environ["ACCELERATE_USE_FSDP"]


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_two_processes_tune_a_transformer_as_one(tmp_path: Path) -> None:
    from lm_fixtures import build_gpt2, build_t5

    folder = str(build_gpt2(tmp_path / "gpt2"))
    torch.set_num_threads(1)
    want = lm_case(folder)
    assert want["moved"] > 1e-3  # the steps did something
    assert want["gradients"] == "none"  # one process: nothing to wrap
    last_iterate = lm_case(folder, averaging="none")
    # DDP is accelerate's (the 'distributed' extra): its cases run where it is installed.
    ddp = importlib.util.find_spec("accelerate") is not None
    jobs = {parallel: (lm_case, (folder, parallel)) for parallel in ("auto", "none")}
    if ddp:
        jobs["ddp"] = (lm_case, (folder, "ddp"))
    jobs["fsdp"] = (lm_case, (folder, "fsdp", "none", 3, str(tmp_path / "by-fsdp")))
    jobs["fsdp-auto"] = (fsdp_config_case, (folder,))
    # Offline: the frozen proposal is a copy of the DDP-wrapped model, updated every step.
    offline = lm_case(folder, proposal="offline")
    if ddp:
        jobs["ddp-offline"] = (lm_case, (folder, "ddp", "ema", 3, None, None, "offline"))
    # A checkpoint written by one process, resumed by two under FSDP.
    lm_case(folder, "none", "none", 3, str(tmp_path / "by-one"))
    jobs["fsdp-resume"] = (lm_case, (folder, "fsdp", "none", 3, None, str(tmp_path / "by-one")))
    # A seq2seq policy runs its encoder alone (outside the wrapper's forward) before decoding.
    t5 = str(build_t5(tmp_path / "t5"))
    t5_want = {
        "t5-ddp": lm_case(t5, "none", "ema", 3, None, None, "online", "a b"),
        "t5-fsdp": lm_case(t5, "none", "none", 3, None, None, "online", "a b"),
    }
    if ddp:
        jobs["t5-ddp"] = (lm_case, (t5, "ddp", "ema", 3, None, None, "online", "a b"))
    jobs["t5-fsdp"] = (lm_case, (t5, "fsdp", "none", 3, None, None, "online", "a b"))
    lora = importlib.util.find_spec("peft") is not None
    if lora:
        t5_want["lora-ddp"] = t5_want["lora-fsdp"] = lora_case(folder, "none")
        assert all("lora_" in name for name in t5_want["lora-ddp"]["parameters"])
        if ddp:
            jobs["lora-ddp"] = (lora_case, (folder, "ddp"))
        jobs["lora-fsdp"] = (lora_case, (folder, "fsdp"))
    ranks = run_two(tmp_path, jobs)
    assert all(ranks[0]["fsdp"]["sharded"]) and not any(ranks[0]["none"]["sharded"])
    online = want
    runs = {"auto": "none", "none": "none", "fsdp": "fsdp", "fsdp-auto": "fsdp", "t5-fsdp": "fsdp"}
    if ddp:
        runs.update({"ddp": "ddp", "ddp-offline": "ddp", "t5-ddp": "ddp"})
    if lora:
        runs["lora-fsdp"] = "fsdp"
        if ddp:
            runs["lora-ddp"] = "ddp"
    for parallel, used in runs.items():
        want = {
            "fsdp": last_iterate,
            "fsdp-auto": last_iterate,
            "ddp-offline": offline,
            **t5_want,
        }.get(parallel, online)
        assert want["moved"] > 1e-3
        moved = max(
            float(np.abs(v - ranks[0][parallel]["parameters"][k]).max())
            for k, v in want["parameters"].items()
        )
        for rank in ranks:
            got = rank[parallel]
            assert got["gradients"] == used
            assert_tuned_alike(got, want, f"parallel={parallel}", exact=used == "none")
        print(f"parallel={parallel}: largest parameter difference, 1 vs 2 processes: {moved:.3g}")
    # Six steps in one process; the FSDP checkpoint (written once, whole) resumed by one process
    # and the one-process checkpoint resumed under FSDP both continue the same way.
    six = lm_case(folder, "none", "none", 6)
    assert [p.name for p in (tmp_path / "by-fsdp").iterdir() if p.name.startswith("step-")] == [
        "step-00000003"
    ]
    resumed = {
        "one from fsdp": lm_case(folder, "none", "none", 3, None, str(tmp_path / "by-fsdp")),
        "fsdp from one, rank 0": ranks[0]["fsdp-resume"],
        "fsdp from one, rank 1": ranks[1]["fsdp-resume"],
    }
    for how, got in resumed.items():
        assert len(got["history"]) == 6
        assert_tuned_alike(got, six, how)


def assert_tuned_alike(
    got: dict[str, Any], want: dict[str, Any], what: str, exact: bool = False
) -> None:
    """A float32 transformer tuned alike: to the bit where the gradients were summed exactly,
    else within the rounding of gradients summed in another order."""
    steps = len(want["history"])
    if exact:
        for name, value in want["parameters"].items():
            np.testing.assert_array_equal(got["parameters"][name], value, err_msg=f"{what}: {name}")
        assert got["history"] == want["history"], what
        return
    for name, value in want["parameters"].items():
        assert_close_after_steps(
            got["parameters"][name], value, steps=steps, what=f"{what}: {name}"
        )
    scale = log_prob_scale(TINY_LENGTH, TINY_VOCABULARY)
    for step, (g, w) in enumerate(zip(got["history"], want["history"], strict=True), 1):
        for key in ("log_z", *(k for k in w if k.startswith("validation/"))):
            assert_close_after_steps(g[key], w[key], steps=step, scale=scale, what=f"{what}: {key}")
        assert_close_after_steps(g["grad_norm"], w["grad_norm"], steps=step, what=f"{what}: norm")


# ---------------------------------------------------------------------------------- the command

SMALL_LENGTH = 6
SMALL = f"""
seed = 3
contexts = ["And the LORD said", "In the beginning"]
[model]
length = {SMALL_LENGTH}
[[features]]
type = "word"
word = "the"
moment = 0.6
[[features]]
type = "function"
path = "rank_features:comma"
moment = 0.4
[fit]
n_samples = 64
[tuner]
loss = "js"
n_steps = 2
samples_per_context = 8
sampling_batch_size = 4
contexts_per_step = 2
learning_rate = 1e-3
[sampler]
acceptance_rate = 0.5
n_samples = 4
estimation_samples = 32
[output]
eval_samples = 16
"""

RANK_FEATURES = """
import os

def comma(sample, context):
    if os.environ.get("DISCO_TEST_FAIL_ON_RANK") == os.environ.get("RANK", "0"):
        raise OSError("the feature's data file is missing on this node")
    return "," in sample.text
"""


def _torchrun(
    config: Path, out: Path, env: dict[str, str] | None = None, processes: int = 2
) -> Any:
    import subprocess

    torchrun = Path(sys.executable).with_name("torchrun")
    return subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            str(processes),
            "-m",
            "disco",
            "run",
            str(config),
            "--out",
            str(out),
            "--allow-imports",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        cwd=config.parent,
    )


def _small_config(tmp_path: Path, tuner: str = "") -> Path:
    (tmp_path / "rank_features.py").write_text(RANK_FEATURES)
    config = tmp_path / "small.toml"
    config.write_text(SMALL.replace("[tuner]\n", "[tuner]\n" + tuner))
    return config


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize(
    ("tuner", "sizes"),
    [("", (2, 3)), ('parallel = "fsdp"\naveraging = "none"\n', (2,))],
    ids=["auto", "fsdp"],
)
def test_torchrun_processes_write_the_one_process_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tuner: str, sizes: tuple[int, ...]
) -> None:
    import json

    from safetensors.torch import load_file

    from disco import cli

    config = _small_config(tmp_path, tuner)
    runs = {size: _torchrun(config, tmp_path / f"on-{size}", processes=size) for size in sizes}
    for size, done in runs.items():
        assert done.returncode == 0, f"{size} processes: {done.stderr[-3000:]}"
        assert done.stdout.count("report folder:") == 1  # rank 0 alone reports
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    torch.set_num_threads(1)
    assert cli.main(["run", str(config), "--out", str(tmp_path / "on-1"), "--allow-imports"]) == 0
    one = json.loads((tmp_path / "on-1" / "report.json").read_text())
    one_weights = load_file(tmp_path / "on-1" / "policy" / "model.safetensors")
    compared = {k: v for k, v in one.items() if k not in ("seconds", "world_size")}
    for size in sizes:
        folder = tmp_path / f"on-{size}"
        many = json.loads((folder / "report.json").read_text())
        assert (one["world_size"], many["world_size"]) == (1, size)
        # Before tuning everything is reduced in chunk order: equal to the bit.
        for key in ("coefficients", "base_rate"):
            assert many[key] == one[key], key
        weights = load_file(folder / "policy" / "model.safetensors")
        assert weights.keys() == one_weights.keys()
        if not tuner:
            # 'auto' sums the gradients exactly: the tuned policy, so the QRS estimate (its
            # beta for the acceptance rate), the samples and every figure, are one process's.
            for name, value in one_weights.items():
                assert torch.equal(weights[name], value), name
            assert {k: many[k] for k in compared} == compared
        else:
            # The run's Adam turns the float32 noise of gradients that are zero in exact
            # arithmetic (attention key biases) into steps of the learning rate's size, so the
            # weights are compared through what they compute: the report's figures.
            assert_reports_alike(many, one)
        rows = (folder / "samples.jsonl").read_text().splitlines()
        assert len(rows) == len((tmp_path / "on-1" / "samples.jsonl").read_text().splitlines())
        assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
            "latest",
            "step-00000002",
        ]


def assert_reports_alike(many: dict[str, Any], one: dict[str, Any]) -> None:
    """The reports of a run of ``SMALL`` whose gradients were summed in float32 in another order.

    The policy agrees to float32 rounding after the run's steps, and so do the figures computed
    from its log-probabilities (sequences of at most SMALL_LENGTH tokens of the embedded model's
    vocabulary) and QRS's log beta, which moves by at most the largest change of a log-ratio.
    """
    import json

    from disco.models import default_model_path

    vocabulary = json.loads((default_model_path() / "config.json").read_text())["vocab_size"]
    scale = log_prob_scale(SMALL_LENGTH, vocabulary)
    for key, value in one.items():
        if key in ("seconds", "world_size", "qrs_beta"):  # beta: compared as its log
            continue
        numbers = value if isinstance(value, list) else [value]
        if numbers and all(isinstance(v, float) for v in numbers):
            assert_close_after_steps(many[key], value, steps=one["steps"], scale=scale, what=key)
        else:
            assert many[key] == value, key


@pytest.mark.multiprocess
@pytest.mark.slow
def test_a_rank_that_fails_brings_the_group_down_with_one_error(tmp_path: Path) -> None:
    config = _small_config(tmp_path)
    done = _torchrun(config, tmp_path / "run", {"DISCO_TEST_FAIL_ON_RANK": "1"})
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "disco: error:" in line]
    assert errors, done.stderr[-3000:]
    assert len({line.split("disco: error:", 1)[1] for line in errors}) == 1
    assert "data file is missing on this node" in errors[0]


# ------------------------------------------------------------------------- one-process building blocks


def test_chunk_seeds_are_stable_and_distinct() -> None:
    # A fixed value: the seed of a key must never change between versions or platforms.
    assert chunk_seed(0, "tune", 0, 0, 0) == chunk_seed(0, "tune", 0, 0, 0)
    assert 0 <= chunk_seed(2**62, "x") < 2**63
    seeds = {
        chunk_seed(1, "tune", step, c, j) for step in range(5) for c in range(3) for j in range(4)
    }
    assert len(seeds) == 60
    with pytest.raises(TypeError, match="ints and strings"):
        chunk_seed(1.5)  # type: ignore[arg-type]


def test_chunks_are_dealt_round_robin_and_cover_every_sample() -> None:
    chunks = plan_chunks(["x", "y"], 10, 4, 0, "test")
    assert [(c.position, c.start, c.size) for c in chunks] == [
        (0, 0, 4),
        (0, 4, 4),
        (0, 8, 2),
        (1, 0, 4),
        (1, 4, 4),
        (1, 8, 2),
    ]
    shares = [World(rank, 4).mine(chunks) for rank in range(4)]
    assert sorted(c.index for share in shares for c in share) == list(range(6))
    assert [c.index for c in shares[1]] == [1, 5]


def test_a_keyed_draw_ignores_and_keeps_the_other_streams() -> None:
    lm = EnumerableLM(seed=4)
    chunk = plan_chunks([""], 16, 16, 9, "test")[0]
    state, torch_state = lm.random_state(), torch.get_rng_state()
    first = distributed.draw_chunk(lm, chunk)
    assert torch.equal(lm.random_state(), state) and torch.equal(torch.get_rng_state(), torch_state)
    lm.sample("", 5)  # moving the model's own stream changes nothing
    torch.rand(3)
    again = distributed.draw_chunk(lm, chunk)
    assert [s.token_ids for s in first[0]] == [s.token_ids for s in again[0]]
    np.testing.assert_array_equal(first[1], again[1])


def test_the_one_process_world_has_size_one() -> None:
    world = distributed.current_world()
    assert (world.rank, world.size, world.is_main) == (0, 1, True)
    assert world.gather_chunks(plan_chunks([""], 5, 2, 0, "t"), lambda c: c.size) == [2, 2, 1]
    with pytest.raises(ValueError, match="boom"):
        world.gather_chunks(plan_chunks([""], 5, 2, 0, "t"), _boom)


def _boom(chunk: Any) -> None:
    raise ValueError("boom")


# ------------------------------------------------------------------- FSDP in lockstep (sharded)


@pytest.mark.parametrize("seq2seq", [False, True], ids=["gpt2", "t5"])
def test_decoding_to_length_gives_the_early_stopping_samples(tmp_path: Path, seq2seq: bool) -> None:
    """``decode_to_length`` only adds forwards: the samples and their log-probabilities stay."""
    from disco.distributions import LMDistribution
    from lm_fixtures import build_gpt2, build_t5

    torch.set_num_threads(1)
    folder = (build_t5 if seq2seq else build_gpt2)(tmp_path / "lm")
    # "a" ends a sample too: every row of a batch ends well before the length cap.
    lm = LMDistribution(str(folder), length=12, batch_size=6, eos_token_id=[2, 4])
    calls = [0]
    lm.model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    runs = {}
    for to_length in (False, True):
        lm.decode_to_length = to_length
        calls[0] = 0
        with distributed.keyed_random(lm, 11):
            samples, log_probs = lm.sample("a b", 12)
        runs[to_length] = ([s.token_ids for s in samples], log_probs.numpy(), calls[0])
    (early_ids, early_lp, early_calls), (full_ids, full_lp, full_calls) = runs.values()
    assert full_calls == 2 * 12  # two batches of six, each decoded for all twelve steps
    assert early_calls < full_calls  # every row of a batch ended early: the check has teeth
    assert full_ids == early_ids
    np.testing.assert_array_equal(full_lp, early_lp)


def test_lockstep_refuses_uneven_chunks_and_a_target_on_the_policys_model(
    tmp_path: Path,
) -> None:
    from disco.distributions import LMDistribution
    from disco.parallel import check_lockstep
    from lm_fixtures import build_gpt2

    folder = str(build_gpt2(tmp_path / "gpt2"))
    policy = LMDistribution(folder, length=5, freeze=False)
    base = LMDistribution(folder, length=5)
    scorer = ExponentialScorer([HAS_A], [1.5])
    check_lockstep(policy, {"target": base * scorer}, {"samples_per_context": (24, 8)})
    check_lockstep(policy, {"target": base * scorer}, {"samples_per_context": (5, 8)})
    with pytest.raises(ValueError) as error:
        check_lockstep(
            policy,
            {"target": policy * scorer, "base": base},
            {"samples_per_context": (20, 8)},
        )
    message = str(error.value)
    assert "samples_per_context=20 is neither a multiple of sampling_batch_size=8" in message
    assert "the target (Product) runs the policy's model" in message
    assert "base" not in message.split("; ")[-1].split("(")[0]


def lockstep_case(
    folder: str, lockstep: bool = True, steps: int = 3, context: str = ""
) -> dict[str, Any]:
    """FSDP tuning, recording at each block's forward how many other blocks are gathered.

    Validated after each step on 8 samples: one chunk, so rank 1 pads there too. One process
    ignores ``parallel`` (nothing is sharded, nothing recorded).
    """
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from disco.parallel import whole_state_dict

    policy, tuner = tiny_gpt2_tuner(
        folder,
        context,
        parallel="fsdp",
        averaging="none",
        fsdp_lockstep=lockstep,
        validation_contexts=(context,),
        validation_interval=1,
        validation_samples=8,
    )
    model = policy.model
    blocks = [m for m in model.modules() if isinstance(m, FSDPModule) and m is not model]
    gathered: list[int] = []

    def record(block: torch.nn.Module, *_: Any) -> None:
        others = [b for b in blocks if b is not block]
        gathered.append(sum(not isinstance(next(b.parameters()), DTensor) for b in others))

    for block in blocks:
        block.register_forward_pre_hook(record)
    outcome = tuned_outcome(policy, tuner, steps, None, context, sample_alone=False)
    outcome["most_gathered"] = max(gathered, default=0)  # besides the block running
    if blocks and lockstep:  # tuned, it stays sharded; whole_state_dict gathers it for rank 0
        whole = whole_state_dict(model)
        outcome["still_sharded"] = all(isinstance(p, DTensor) for p in model.parameters())
        outcome["whole"] = {k: v.numpy() for k, v in (whole or {}).items()}
    outcome["block_calls"] = len(gathered)
    outcome["blocks"] = len(blocks)
    return outcome


def lockstep_refusal(folder: str) -> str:
    """Chunks of 8, 8 and 4: a dummy chunk of 8 would not make the calls of the last one."""
    try:
        tiny_gpt2_tuner(
            folder, parallel="fsdp", averaging="none", fsdp_lockstep=True, samples_per_context=20
        )
    except ValueError as err:
        return str(err)
    return "not refused"


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_two_processes_tune_in_lockstep_with_the_model_sharded_as_one(tmp_path: Path) -> None:
    """``fsdp_lockstep``: blocks gathered one at a time, and still the one-process steps.

    Three chunks over two ranks: rank 1 pads with a dummy chunk.
    """
    from lm_fixtures import build_gpt2, build_t5

    gpt2 = str(build_gpt2(tmp_path / "gpt2"))
    t5 = str(build_t5(tmp_path / "t5"))
    torch.set_num_threads(1)
    want = {"gpt2": lockstep_case(gpt2), "t5": lockstep_case(t5, True, STEPS, "a b")}
    jobs = {
        "gpt2": (lockstep_case, (gpt2,)),
        "t5": (lockstep_case, (t5, True, STEPS, "a b")),
        "gathered": (lockstep_case, (gpt2, False, 1)),  # the default: the whole model
        "refused": (lockstep_refusal, (gpt2,)),
    }
    ranks = run_two(tmp_path, jobs)
    for rank in ranks:  # refused on every rank before anything is sharded: no hang
        assert "samples_per_context=20 is neither a multiple" in rank["refused"]
    for rank in ranks:
        # The observable: gathered for the step, every block is unsharded at every forward.
        assert rank["gathered"]["most_gathered"] == rank["gathered"]["blocks"] - 1
    for case, one in want.items():
        assert one["gradients"] == "none" and one["block_calls"] == 0  # one process
        assert one["moved"] > 1e-3
        calls = {rank[case]["block_calls"] for rank in ranks}
        assert len(calls) == 1  # every rank called every block as often
        for rank in ranks:
            got = rank[case]
            assert got["gradients"] == "fsdp"
            assert got["most_gathered"] == 0  # one block gathered at a time
            assert got["still_sharded"]
            assert all(w["validation/kl_target_proposal"] != 0 for w in one["history"])
            assert_tuned_alike(got, one, f"{case} in lockstep")
        for name, value in ranks[0][case]["parameters"].items():
            np.testing.assert_array_equal(ranks[0][case]["whole"][name], value, err_msg=name)
        assert ranks[1][case]["whole"] == {}
        moved = max(
            float(np.abs(v - ranks[0][case]["parameters"][k]).max())
            for k, v in one["parameters"].items()
        )
        print(f"{case} in lockstep: largest parameter difference, 1 vs 2 processes: {moved:.3g}")
