"""disco: distributional control of generative models.

Express a target distribution as an energy-based model over a generative model's outputs,
tune a model to approximate it, and sample from it with quasi-rejection sampling.
"""

from typing import Any

from disco._aliases import install as _install_original_paths
from disco._core import ConvergenceError
from disco._core import __version__ as __version__

_install_original_paths()  # the original disco's module paths (disco.tuners.dpg_tuner, ...)

__all__ = ["ConvergenceError", "__version__", "evaluate"]


def __getattr__(name: str) -> Any:
    # `evaluate` draws with torch: imported on first use, so that `import disco` stays light.
    if name == "evaluate":
        from disco.evaluation import evaluate

        return evaluate
    raise AttributeError(f"module 'disco' has no attribute {name!r}")
