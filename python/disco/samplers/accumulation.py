"""Drawing a fixed number of samples from a distribution, batch by batch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from disco._calls import draw_batch
from disco.samplers._common import at_least_one

# torch is imported where it is used: the samplers' registry (``disco list``) costs no torch.
if TYPE_CHECKING:
    import torch

__all__ = ["AccumulationSampler"]


class AccumulationSampler:
    """Draws exactly ``total_size`` samples from ``distribution`` in batches, with a progress bar.

    Parameters
    ----------
    distribution:
        Anything with ``sample(context, sampling_size) -> (samples, log_probs)``.
    total_size:
        How many samples one call to :meth:`sample` returns.
    progress:
        Show a progress bar while drawing.

    Examples
    --------
    >>> from disco.distributions import EnumerableLM
    >>> samples, log_probs = AccumulationSampler(EnumerableLM(), 100, progress=False).sample()
    >>> len(samples), tuple(log_probs.shape)
    (100, (100,))
    """

    def __init__(self, distribution: Any, total_size: int = 512, *, progress: bool = True) -> None:
        self.distribution = distribution
        self.total_size = at_least_one(total_size, "total_size")
        self.progress = progress

    def __repr__(self) -> str:
        return f"AccumulationSampler({self.distribution!r}, total_size={self.total_size})"

    def sample(self, context: Any = "", sampling_size: int = 32) -> tuple[list[Any], torch.Tensor]:
        """Draw ``total_size`` samples in batches of ``sampling_size``.

        Returns the samples and their log-probabilities (a float64 CPU tensor).
        """
        import torch

        sampling_size = at_least_one(sampling_size, "sampling_size")
        samples: list[Any] = []
        log_probs: list[torch.Tensor] = []
        with tqdm(
            total=self.total_size, desc="sampling", disable=not self.progress, leave=False
        ) as bar:
            while len(samples) < self.total_size:
                size = min(int(sampling_size), self.total_size - len(samples))
                batch, lq = draw_batch(self.distribution, context, size)
                batch, lq = batch[:size], lq[:size]
                samples.extend(batch)
                log_probs.append(torch.from_numpy(lq.copy()))
                bar.update(len(batch))
        return samples, torch.cat(log_probs)
