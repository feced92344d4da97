"""Drawing for the command: n samples split over contexts, and QRS or IMH within a budget."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from disco.cli.config import MAX_PROPOSALS
from disco.cli.errors import UserError
from disco.cli.report import beta_text

__all__ = ["check_qrs_cost", "draw", "draw_exactly", "qrs_log_beta", "shares"]


def shares(total: int, contexts: Sequence[str]) -> list[tuple[str, int]]:
    """``total`` samples split as evenly as possible over ``contexts`` (none gets zero-sized)."""
    k = len(contexts)
    counts = [total // k + (i < total % k) for i in range(k)]
    return [(c, n) for c, n in zip(contexts, counts) if n > 0]


DRAW_CHUNK = 256  # samples per keyed chunk of the report's draws (dealt to the ranks)


def draw(
    model: Any, contexts: Sequence[str], total: int, seed: int, stage: str
) -> list[tuple[str, list[Any]]]:
    """``total`` samples of ``model`` split over ``contexts``, in keyed chunks shared by the ranks.

    Chunk ``j`` of context ``c`` is drawn from the seed of ``(seed, stage, c, j)``
    (:mod:`disco.distributed`), so the samples do not depend on the number of processes.
    """
    import torch

    from disco.distributed import current_world, draw_chunk, plan_chunks

    world = current_world()
    drawn = []
    with torch.no_grad():
        for position, (c, n) in enumerate(shares(total, contexts)):
            chunks = plan_chunks([c], n, DRAW_CHUNK, seed, stage, position)
            parts = world.gather_chunks(chunks, lambda chunk: draw_chunk(model, chunk)[0])
            drawn.append((c, [x for part in parts for x in part]))
    return drawn


def draw_exactly(method: str, sampler: Any, n: int, context: str) -> Any:
    """``n`` samples of ``context`` from a QRS or IMH ``sampler`` within :data:`MAX_PROPOSALS`."""
    from disco.samplers import SAMPLERS

    try:
        return SAMPLERS[method].sample_n(sampler, n, context, MAX_PROPOSALS)
    except RuntimeError as err:
        raise UserError(
            str(err), "sampler", f"{method.upper()} gave up after {MAX_PROPOSALS} proposals"
        ) from None


def check_qrs_cost(estimated_rate: float, log_beta: float, n: int) -> None:
    """Refuse before drawing when the estimated acceptance rate makes ``n`` samples unaffordable."""
    needed = n / estimated_rate if estimated_rate > 0 else math.inf
    if needed > MAX_PROPOSALS:
        raise UserError(
            f"QRS at beta={beta_text(log_beta)} accepts about {estimated_rate:.3g} of the "
            f"proposals, so {n} samples would take about {needed:.3g} of them",
            "sampler.beta",
            "use a smaller beta, or acceptance_rate instead",
        )


def qrs_log_beta(
    estimator: Any, beta: float | None, acceptance_rate: float | None, n: int
) -> tuple[float, float]:
    """QRS's log β (``beta``'s, else the one ``estimator`` gives ``acceptance_rate``) and its rate.

    Log β throughout: an EBM's unnormalised scores can put β past float range. ``n`` samples
    at the estimated acceptance rate must be affordable (:func:`check_qrs_cost`).
    """
    if beta is not None:
        log_beta = math.log(beta)
    else:
        log_beta = estimator.log_beta_for_acceptance_rate(acceptance_rate)
    rate = estimator.acceptance_rate_at_beta(log_beta=log_beta)
    check_qrs_cost(rate, log_beta, n)
    return log_beta, rate
