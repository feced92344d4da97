"""The original disco's module path for :class:`PipelineScorer`."""

from disco.scorers.pipeline import PipelineScorer

__all__ = ["PipelineScorer"]
