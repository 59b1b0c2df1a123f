"""The label cache's reuse of single texts: a new label set takes the vectors that earlier entries made with the
same encoder settings hold for its texts, so a label set that changed a little encodes only what changed.

Each entry `CACHE/KEY/` (an embedding store) has a digest file `CACHE/KEY.SETTINGS.texts.parquet`: one 16-byte
BLAKE2b digest of each row's text, written once the entry is whole."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from eztag.artifacts import digest_frame, write_parquet
from eztag.embeddings import META, EmbeddingStore, gather_rows

TEXTS_SUFFIX = ".texts.parquet"


def text_digests(texts: Sequence[str]) -> pl.DataFrame:
    """One row per text: its 16-byte BLAKE2b `digest`."""
    return digest_frame(text.encode() for text in texts)


def write_digests(cache: Path, key: str, settings: str, texts: Sequence[str]) -> None:
    """Make the whole entry `key` findable by its texts (once; an entry from before digest files gets one now)."""
    path = cache / f"{key}.{settings}{TEXTS_SUFFIX}"
    if not path.exists():
        write_parquet(path, text_digests(texts))


@dataclasses.dataclass
class Reuse:
    """Where each row of a new label set gets its vector: `sources` (store, rows, the store's rows) hold some, and
    the rows `missing` are encoded into `new`, a store named by those rows (a killed encode resumes only for them)."""

    sources: list[tuple[EmbeddingStore, np.ndarray, np.ndarray]]
    missing: np.ndarray
    new: EmbeddingStore


def find_vectors(cache: Path, key: str, settings: str, texts: Sequence[str]) -> Reuse:
    """The vectors for `texts`, the rows of entry `key`, that the cache's entries with these encoder `settings` hold,
    newest entry first."""
    wanted = text_digests(texts).with_row_index("row")
    paths = sorted(cache.glob(f"*.{settings}{TEXTS_SUFFIX}"), key=lambda path: path.stat().st_mtime, reverse=True)
    sources = []
    for path in paths:
        if wanted.is_empty():
            break
        store = EmbeddingStore(cache / path.name.split(".")[0])
        if not (store.directory / META).exists():  # its entry was deleted
            continue
        held = pl.read_parquet(path).with_row_index("held_row").unique("digest", keep="first")
        found = wanted.join(held, on="digest", how="inner")
        if found.height:
            sources.append((store, found["row"].to_numpy(), found["held_row"].to_numpy().astype(np.int64)))
            wanted = wanted.join(found.select("row"), on="row", how="anti")
    missing = wanted["row"].to_numpy().astype(np.int64)
    rows = hashlib.sha256(missing.tobytes()).hexdigest()[:16]
    return Reuse(sources, missing, EmbeddingStore(cache / f".{key}.{rows}.new"))


def assemble(store: EmbeddingStore, count: int, chunk_size: int, dtype: str, reuse: Reuse) -> None:
    """Write the chunks of `store` (`count` rows) still to write from `reuse`'s sources and its encoded `new` store,
    then its meta.json, and remove `new`."""
    parts = list(reuse.sources)
    if len(reuse.missing):
        parts.append((reuse.new, reuse.missing, np.arange(len(reuse.missing), dtype=np.int64)))
    dim = parts[0][0].dim
    for chunk, start, stop in store.pending(count, chunk_size):
        vectors = np.empty((stop - start, dim), dtype=np.float32)
        for source, rows, source_rows in parts:
            inside = (rows >= start) & (rows < stop)
            if inside.any():
                vectors[rows[inside] - start] = gather_rows(source, source_rows[inside])
        store.put(chunk, vectors, dtype)
    store.finish(count, chunk_size, dtype)
    shutil.rmtree(reuse.new.directory, ignore_errors=True)
