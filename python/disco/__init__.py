"""disco: distributional control of generative models.

Express a target distribution as an energy-based model over a generative model's outputs,
tune a model to approximate it, and sample from it with quasi-rejection sampling.
"""

from disco._core import ConvergenceError
from disco._core import __version__ as __version__

__all__ = ["ConvergenceError", "__version__"]
