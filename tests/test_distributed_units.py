"""The one-process building blocks of data parallelism: chunk seeds, the plan of chunks and how
they are dealt, keyed draws, and the world of size one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from disco import distributed
from disco.distributed import World, chunk_seed, plan_chunks
from disco.distributions import EnumerableLM

# ------------------------------------------------------------------------- one-process building blocks


def test_chunk_seeds_are_stable_and_distinct() -> None:
    # A fixed value: the seed of a key must never change between versions or platforms.
    assert chunk_seed(0, "tune", 0, 0, 0) == chunk_seed(0, "tune", 0, 0, 0)
    assert 0 <= chunk_seed(2**62, "x") < 2**63
    seeds = {
        chunk_seed(1, "tune", step, c, j) for step in range(5) for c in range(3) for j in range(4)
    }
    assert len(seeds) == 60
    with pytest.raises(TypeError, match="ints and strings"):
        chunk_seed(1.5)  # type: ignore[arg-type]


def test_chunks_are_dealt_round_robin_and_cover_every_sample() -> None:
    chunks = plan_chunks(["x", "y"], 10, 4, 0, "test")
    assert [(c.position, c.start, c.size) for c in chunks] == [
        (0, 0, 4),
        (0, 4, 4),
        (0, 8, 2),
        (1, 0, 4),
        (1, 4, 4),
        (1, 8, 2),
    ]
    shares = [World(rank, 4).mine(chunks) for rank in range(4)]
    assert sorted(c.index for share in shares for c in share) == list(range(6))
    assert [c.index for c in shares[1]] == [1, 5]


def test_a_keyed_draw_ignores_and_keeps_the_other_streams() -> None:
    lm = EnumerableLM(seed=4)
    chunk = plan_chunks([""], 16, 16, 9, "test")[0]
    state, torch_state = lm.random_state(), torch.get_rng_state()
    first = distributed.draw_chunk(lm, chunk)
    assert torch.equal(lm.random_state(), state) and torch.equal(torch.get_rng_state(), torch_state)
    lm.sample("", 5)  # moving the model's own stream changes nothing
    torch.rand(3)
    again = distributed.draw_chunk(lm, chunk)
    assert [s.token_ids for s in first[0]] == [s.token_ids for s in again[0]]
    np.testing.assert_array_equal(first[1], again[1])


def test_the_one_process_world_has_size_one() -> None:
    world = distributed.current_world()
    assert (world.rank, world.size, world.is_main) == (0, 1, True)
    assert world.gather_chunks(plan_chunks([""], 5, 2, 0, "t"), lambda c: c.size) == [2, 2, 1]
    with pytest.raises(ValueError, match="boom"):
        world.gather_chunks(plan_chunks([""], 5, 2, 0, "t"), _boom)


def _boom(chunk: Any) -> None:
    raise ValueError("boom")
