"""Scorers: features, positive factors and products of them (energy-based models)."""

from disco.scorers.base import BooleanScorer, ExponentialScorer, PositiveScorer, Product, Scorer
from disco.scorers.pipeline import PipelineScorer

__all__ = [
    "BooleanScorer",
    "ExponentialScorer",
    "PipelineScorer",
    "PositiveScorer",
    "Product",
    "Scorer",
]
