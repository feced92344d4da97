"""Distributions: the protocol, language models, context distributions and enumerable models."""

from typing import TYPE_CHECKING

from disco._lazy import lazy_exports

if TYPE_CHECKING:
    from disco.distributions.base import BaseDistribution, Distribution, TextSample, TokenIds
    from disco.distributions.contexts import (
        ContextDistribution,
        DatasetContextDistribution,
        SingleContextDistribution,
    )
    from disco.distributions.enumerable import EnumerableLM
    from disco.distributions.lm import LMDistribution
    from disco.distributions.warp import Warp

__all__ = [
    "BaseDistribution",
    "ContextDistribution",
    "DatasetContextDistribution",
    "Distribution",
    "EnumerableLM",
    "LMDistribution",
    "SingleContextDistribution",
    "TextSample",
    "TokenIds",
    "Warp",
]

# Imported on first use: the context distributions and the warp's checks cost no torch, and
# the language model's transformers is loaded only by those who use it.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BaseDistribution": "disco.distributions.base",
        "ContextDistribution": "disco.distributions.contexts",
        "DatasetContextDistribution": "disco.distributions.contexts",
        "Distribution": "disco.distributions.base",
        "EnumerableLM": "disco.distributions.enumerable",
        "LMDistribution": "disco.distributions.lm",
        "SingleContextDistribution": "disco.distributions.contexts",
        "TextSample": "disco.distributions.base",
        "TokenIds": "disco.distributions.base",
        "Warp": "disco.distributions.warp",
    },
)
