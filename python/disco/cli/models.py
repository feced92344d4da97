"""The models a run loads: the base, and the policy to tune (all of it, or LoRA adapters)."""

from __future__ import annotations

import warnings
from typing import Any

from disco.cli.config import LoraSection, ModelSection
from disco.cli.errors import UserError, first_line

__all__ = ["load_model", "make_policy"]


def load_model(model: ModelSection, freeze: bool = True) -> Any:
    """The ``LMDistribution`` of ``[model]``; a model that cannot load is a user error."""
    from disco.distributions import LMDistribution

    try:
        return LMDistribution(model.path, freeze=freeze, **model.settings())
    except OSError as err:
        raise UserError(
            first_line(err), "model.path", "check the path, or that the Hub can be reached"
        ) from None
    except ValueError as err:
        raise UserError(str(err), "model", "fix that setting") from None


def make_policy(model: ModelSection, lora: LoraSection | None) -> Any:
    """The model to tune: a trainable copy of the base, or the base with new LoRA adapters."""
    from disco.distributions import LMDistribution

    policy = load_model(model, freeze=False)
    if lora is None:
        return policy
    import peft

    config = peft.LoraConfig(
        task_type="SEQ_2_SEQ_LM" if policy.is_seq2seq else "CAUSAL_LM",
        r=lora.r,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # peft says int; alpha / r is a float
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
    )
    try:
        with warnings.catch_warnings():
            # GPT-2's Conv1D layers: peft sets fan_in_fan_out itself, and says so
            warnings.filterwarnings("ignore", message="fan_in_fan_out", category=UserWarning)
            adapted = peft.get_peft_model(policy.model, config)
    except ValueError as err:
        raise UserError(str(err), "lora", "fix the LoRA settings (target_modules?)") from None
    return LMDistribution(adapted, policy.tokenizer, freeze=False, **model.settings())
