"""Distributions: the protocol, language models, context distributions and enumerable models."""

from disco.distributions.base import BaseDistribution, Distribution, TextSample
from disco.distributions.enumerable import EnumerableLM

__all__ = ["BaseDistribution", "Distribution", "EnumerableLM", "TextSample"]
