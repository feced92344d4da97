"""Data-parallel runs give the one-process results (2 processes, gloo, spawned by the test).

The two-process group is started once per module (spawning costs seconds); it runs every
scenario and saves what it got, and each test compares that with a one-process run here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import assert_close_after_steps, log_prob_scale
from disco.distributions import ContextDistribution, EnumerableLM
from disco.scorers import BooleanScorer, ExponentialScorer
from disco.tuners import JSLoss, KLLoss, Tuner
from distributed_helpers import HAS_A, STEPS, _outcome, run_two

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

    with mock.patch("importlib.util.find_spec", return_value=None):
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
