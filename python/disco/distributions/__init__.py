"""Distributions: the protocol, language models, context distributions and enumerable models."""

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
