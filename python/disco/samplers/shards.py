"""Large draws written as one JSONL shard per rank plus an index, instead of gathered.

``QuasiRejectionSampler.sample_n(..., shard_dir=FOLDER)`` leaves each rank's accepted samples
in its own file and only their counts travel between ranks. Each record carries the sample's
place in the one-process draw (its chunk and its row within the chunk), so the union of the
shards, in that order, is the draw one process returns (:func:`read_shards`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from disco._atomic import write_text_atomically
from disco.samplers._common import Samples

__all__ = ["INDEX", "read_shards", "shard_name", "write_index", "write_shard"]

INDEX = "index.json"
FORMAT = "disco-sample-shards"


def shard_name(rank: int, size: int) -> str:
    """The file of ``rank``'s shard in a world of ``size``."""
    return f"shard-{rank:05d}-of-{size:05d}.jsonl"


def _record(chunk: int, row: int, sample: Any, log_p: float, log_q: float) -> dict[str, Any]:
    token_ids = getattr(sample, "token_ids", None)
    record: dict[str, Any] = {"chunk": chunk, "row": row}
    if token_ids is not None:
        record["token_ids"] = [int(t) for t in token_ids]
    record["text"] = getattr(sample, "text", None) if token_ids is not None else str(sample)
    record["target_log_score"] = float(log_p)
    record["proposal_log_score"] = float(log_q)
    return record


def write_shard(
    folder: Path, rank: int, size: int, chunks: Sequence[int], samples: Samples
) -> Path:
    """Write this rank's kept samples (``chunks[i]``: the chunk of row ``i``), atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    row_in_chunk: dict[int, int] = {}
    for chunk, sample, lp, lq in zip(
        chunks,
        samples.samples,
        samples.target_log_scores.tolist(),
        samples.proposal_log_scores.tolist(),
    ):
        row = row_in_chunk.get(chunk, 0)
        row_in_chunk[chunk] = row + 1
        lines.append(json.dumps(_record(chunk, row, sample, lp, lq)) + "\n")
    path = folder / shard_name(rank, size)
    write_text_atomically(path, "".join(lines))
    return path


def write_index(folder: Path, context: Any, counts: Sequence[int]) -> Path:
    """Rank 0's index: which shards make the draw and how many samples each holds."""
    size = len(counts)
    index = {
        "format": FORMAT,
        "context": str(context),
        "samples": int(sum(counts)),
        "world_size": size,
        "shards": [
            {"file": shard_name(rank, size), "samples": int(count)}
            for rank, count in enumerate(counts)
        ],
    }
    path = folder / INDEX
    write_text_atomically(path, json.dumps(index, indent=2))
    return path


def read_shards(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of the draw the index names, in the one-process order (chunk, then row).

    Raises ``ValueError`` when the index is missing or a shard does not hold the count the
    index gives (a shard from another run, or one cut short).
    """
    folder = Path(folder)
    try:
        index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{folder} holds no {INDEX}: not a sharded draw") from None
    if index.get("format") != FORMAT:
        raise ValueError(f"{folder / INDEX} is not a {FORMAT} index")
    records: list[dict[str, Any]] = []
    for shard in index["shards"]:
        name = str(shard["file"])
        if Path(name).name != name:
            raise ValueError(f"{folder / INDEX} names a shard outside its folder: {name!r}")
        with open(folder / name, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        if len(rows) != shard["samples"]:
            raise ValueError(
                f"{folder / name} holds {len(rows)} samples where the index says {shard['samples']}"
            )
        records.extend(rows)
    return sorted(records, key=lambda r: (r["chunk"], r["row"]))
