"""Transformers tuned on two processes (gloo, spawned by the test) as on one: a tiny GPT-2 and T5
under every ``parallel`` setting, LoRA adapters, FSDP checkpoints, and FSDP in lockstep.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import assert_close_after_steps, log_prob_scale
from disco import distributed
from disco.scorers import ExponentialScorer
from disco.tuners import Tuner
from distributed_helpers import HAS_A, STEPS, _full, _outcome, run_two
from lm_fixtures import SPECIAL, WORDS

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


def one_chunk_case(folder: str, parallel: str) -> dict[str, Any]:
    """Offline, one chunk a step: of two processes, rank 1 holds no chunk in any step."""
    policy, tuner = tiny_gpt2_tuner(
        folder, parallel=parallel, proposal="offline", samples_per_context=8
    )
    return tuned_outcome(policy, tuner, 3, None)


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
    # Offline: the frozen proposal is a copy of the DDP-wrapped model, updated every step. One
    # chunk a step: the rank that holds none must still meet the other at every collective.
    offline = one_chunk_case(folder, "none")
    if ddp:
        jobs["ddp-offline"] = (one_chunk_case, (folder, "ddp"))
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
