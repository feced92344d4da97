"""Distributions: the protocol, language models, context distributions and enumerable models."""

from disco.distributions.base import BaseDistribution, Distribution, TextSample

__all__ = ["BaseDistribution", "Distribution", "TextSample"]
