"""Scorers: features, positive factors and products of them (energy-based models)."""

from typing import TYPE_CHECKING

from disco._lazy import lazy_exports

if TYPE_CHECKING:
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

# Imported on first use: the scorers of base.py cost no torch, the classifier's scorer does.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BooleanScorer": "disco.scorers.base",
        "ExponentialScorer": "disco.scorers.base",
        "PipelineScorer": "disco.scorers.pipeline",
        "PositiveScorer": "disco.scorers.base",
        "Product": "disco.scorers.base",
        "Scorer": "disco.scorers.base",
    },
)
