"""Updating a cached index for a changed label set instead of building it anew (`[index] update_limit`).

Each index cache entry `CACHE/KEY/` of an updatable backend (FAISS on the CPU) has a slot file
`CACHE/KEY.FAMILY.slots.parquet`: a 16-byte BLAKE2b digest of each slot's vector (its float32 bytes), where FAMILY
hashes the backend, the options that change a build and the dimension. A label set whose index is not in the cache
pairs its vectors with the slots of each entry of its family, one to one (equal digests; duplicates in order); the
entry leaving the fewest vectors to add and slots to hide is updated — its unpaired vectors appended as new slots,
its unpaired slots stale — when those are at most `update_limit` of the updated index's slots."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from eztag.artifacts import digest_frame
from eztag.embeddings import EmbeddingStore

SLOTS_SUFFIX = ".slots.parquet"


def vector_digests(store: EmbeddingStore) -> pl.DataFrame:
    """One row per vector of `store`: the 16-byte BLAKE2b `digest` of its float32 bytes."""
    return digest_frame(
        row.tobytes() for chunk in store.iter_chunks() for row in np.ascontiguousarray(chunk, dtype=np.float32)
    )


def slots_file(entry: Path, family: str) -> Path:
    """The slot file of the cache entry `entry` of the index family `family`."""
    return entry.parent / f"{entry.name}.{family}{SLOTS_SUFFIX}"


@dataclasses.dataclass
class Update:
    """How the cached index `base` becomes the index of a new label set: `added_rows` (label rows) are appended as new
    slots, then each slot holds the label row `slot_rows` names (-1: stale); `slot_digests` are the updated index's
    slot file."""

    base: Path
    added_rows: np.ndarray
    slot_rows: np.ndarray
    slot_digests: pl.DataFrame

    @property
    def stale(self) -> int:
        return int((self.slot_rows < 0).sum())

    @property
    def changed_fraction(self) -> float:
        """Added and stale slots as a fraction of the updated index's slots."""
        return (len(self.added_rows) + self.stale) / max(1, len(self.slot_rows))

    def summary(self) -> dict[str, Any]:
        """The index report's account of the update."""
        return {
            "entry": self.base.name,
            "slots": len(self.slot_rows),
            "added": len(self.added_rows),
            "stale": self.stale,
        }


def numbered(digests: pl.DataFrame, name: str) -> pl.DataFrame:
    """`digests` with its row number `name` and `occurrence`: how many earlier rows have the same digest (pairs
    duplicates one to one). Only repeated digests are counted in a window (at 10^6 a window over all rows took 0.9 s,
    this 0.3 s)."""
    repeated = pl.col("digest").is_duplicated()
    earlier = pl.int_range(pl.len(), dtype=pl.UInt32).over("digest")
    return digests.with_row_index(name).with_columns(
        occurrence=pl.when(repeated).then(earlier).otherwise(pl.lit(0, dtype=pl.UInt32))
    )


def pair_with(base: Path, slot_digests: pl.DataFrame, wanted: pl.DataFrame) -> Update:
    """The update of the entry `base` (its slots' digests `slot_digests`) to the vectors `wanted`: their digests
    `numbered` by "row"."""
    held = numbered(slot_digests, "slot")
    pairs = wanted.join(held, on=["digest", "occurrence"], how="inner")
    paired = np.zeros(wanted.height, dtype=bool)
    paired[pairs["row"].to_numpy()] = True
    added_rows = np.flatnonzero(~paired).astype(np.int64)
    slot_rows = np.full(held.height + len(added_rows), -1, dtype=np.int64)
    slot_rows[pairs["slot"].to_numpy()] = pairs["row"].to_numpy()
    slot_rows[held.height :] = added_rows
    new_digests = pl.concat([slot_digests, wanted.select("digest")[added_rows]])
    return Update(base, added_rows, slot_rows, new_digests)


def plan_update(cache: Path, family: str, digests: pl.DataFrame, limit: float) -> Update | None:
    """The cheapest update of an entry of `family` in `cache` to the vectors with `digests`, if its added and stale
    slots are at most `limit` of its slots."""
    wanted = numbered(digests, "row")
    best: Update | None = None
    for path in sorted(cache.glob(f"*.{family}{SLOTS_SUFFIX}")):  # of equal updates, the first by name
        entry = cache / path.name.split(".")[0]
        if not entry.is_dir():  # pruned, or its build was killed
            continue
        update = pair_with(entry, pl.read_parquet(path), wanted)
        if best is None or update.changed_fraction < best.changed_fraction:
            best = update
    return best if best is not None and best.changed_fraction <= limit else None
