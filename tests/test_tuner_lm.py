"""End to end on a tiny GPT-2 the test builds: every tuner runs, gradients reach the weights."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import require_extra
from disco.distributions import LMDistribution
from disco.features import word_present
from disco.scorers import ExponentialScorer
from disco.tuners import CDPGTuner, DPGTuner, FCDPGTuner, FDPGTuner, TVLoss

HAS_A = word_present("a")


class Contexts:
    def contexts(self):
        return ["", "b", "a c"]


def make(gpt2_path):
    base = LMDistribution(str(gpt2_path), length=5)
    policy = LMDistribution(str(gpt2_path), length=5, freeze=False)
    target = base * ExponentialScorer([HAS_A], [1.5])
    return base, policy, target


@pytest.mark.parametrize(
    ("tuner_cls", "kwargs"),
    [
        (DPGTuner, {"context": "b"}),
        (FDPGTuner, {"loss": TVLoss()}),
        (CDPGTuner, {"context_distribution": Contexts()}),
        (FCDPGTuner, {"context_distribution": Contexts()}),
    ],
)
def test_every_tuner_runs_on_a_transformer(gpt2_path, tuner_cls, kwargs):
    base, policy, target = make(gpt2_path)
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    torch.manual_seed(0)
    history = tuner_cls(
        policy,
        target,
        n_steps=2,
        samples_per_context=16,
        contexts_per_step=2,
        scoring_batch_size=8,
        learning_rate=1e-2,
        features=(HAS_A,),
        base=base,
        kl_from_base=True,
        **kwargs,
    ).tune()
    for metrics in history:
        for key in (
            "loss",
            "kl_target_policy",
            "tv_target_policy",
            "js_target_policy",
            "ess",
            "log_z",
            "kl_policy_base",
            "moment/word:a",
        ):
            assert math.isfinite(metrics[key]), key
    changed = [n for n, p in policy.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "no parameter moved"
    assert all(torch.equal(p, before[n]) for n, p in base.model.named_parameters())


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_trains_only_adapters_and_shares_the_base_weights(gpt2_path):
    peft = require_extra("peft")
    model = AutoModelForCausalLM.from_pretrained(gpt2_path)
    wrapped = peft.get_peft_model(
        model,
        peft.LoraConfig(
            r=2, lora_alpha=4, target_modules=["c_attn"], lora_dropout=0.0, fan_in_fan_out=True
        ),
    )
    policy = LMDistribution(
        wrapped, AutoTokenizer.from_pretrained(gpt2_path), length=5, freeze=False
    )
    base = policy.without_adapters()
    target = base * ExponentialScorer([HAS_A], [1.5])
    torch.manual_seed(1)
    samples, _ = base.sample("", 8)
    base_scores = base.log_score(samples)
    before = {n: p.detach().clone() for n, p in wrapped.named_parameters()}
    DPGTuner(policy, target, n_steps=3, samples_per_context=16, learning_rate=5e-2).tune()
    changed = {n for n, p in wrapped.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    # The base is the same weights with the adapters off: its scores have not moved (the same
    # computation on the same batch: to the bit).
    assert torch.equal(base.log_score(samples), base_scores)
    assert not torch.allclose(policy.log_score(samples), base_scores, atol=1e-6)
    with pytest.raises(ValueError, match="peft"):
        LMDistribution(str(gpt2_path)).without_adapters()
