"""Embedding stores: a directory of `.npy` chunks written atomically, so a killed encode resumes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from eztag import runstate
from eztag.artifacts import write_json, write_npy
from eztag.engines import Engine, LocalEngine

log = logging.getLogger(__name__)

META = "meta.json"


class EmbeddingStore:
    """Row-ordered vectors kept as `chunk-00000.npy`, `chunk-00001.npy`, … plus `meta.json`."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def chunk_path(self, index: int) -> Path:
        return self.directory / f"chunk-{index:05d}.npy"

    @property
    def meta(self) -> dict:
        return json.loads((self.directory / META).read_text())

    @property
    def count(self) -> int:
        return int(self.meta["count"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def pending(self, count: int, chunk_size: int) -> list[tuple[int, int, int]]:
        """(chunk, start row, stop row) of every chunk of `count` rows not yet on disk."""
        return [span for span in chunk_spans(count, chunk_size) if not self.chunk_path(span[0]).exists()]

    def put(self, chunk: int, vectors: np.ndarray, dtype: str) -> None:
        """Write one chunk's vectors atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        write_npy(self.chunk_path(chunk), np.ascontiguousarray(vectors, dtype=dtype))

    def finish(self, count: int, chunk_size: int, dtype: str) -> None:
        """Write meta.json once every chunk is on disk."""
        dim = int(np.load(self.chunk_path(0), mmap_mode="r").shape[1])
        write_json(
            self.directory / META,
            {
                "count": count,
                "dim": dim,
                "dtype": dtype,
                "chunk_size": chunk_size,
                "chunks": chunk_count(count, chunk_size),
            },
        )

    def write(
        self,
        texts: Sequence[Any],
        encode: Callable[[Sequence[Any]], np.ndarray],
        *,
        chunk_size: int,
        dtype: str = "float32",
        description: str = "encoding",
    ) -> None:
        """Encode `texts` chunk by chunk in this process, skipping chunks already on disk, then write meta.json."""
        write_stores(LocalEngine(), lambda: encode, [(self, texts, description)], chunk_size=chunk_size, dtype=dtype)

    def iter_chunks(self) -> Iterator[np.ndarray]:
        """Each chunk as a read-only memory map, in row order."""
        for i in range(int(self.meta["chunks"])):
            yield np.load(self.chunk_path(i), mmap_mode="r")

    def load(self) -> np.ndarray:
        """All vectors in one array (float32)."""
        return np.concatenate([np.asarray(chunk, dtype=np.float32) for chunk in self.iter_chunks()])


def write_stores(
    engine: Engine,
    make_encoder: Callable[[], Callable[[Sequence[Any]], np.ndarray]],
    jobs: Sequence[tuple[EmbeddingStore, Sequence[Any], str]],
    *,
    chunk_size: int,
    dtype: str,
) -> None:
    """Encode each (store, texts, description) chunk by chunk on `engine` (`make_encoder` builds the encode
    function once per worker), skipping chunks already on disk; each chunk is written atomically as it comes back,
    then each store's meta.json."""
    units: list[Sequence[Any]] = []
    owners: list[tuple[int, int]] = []  # (job, chunk) of each unit
    stored, chunks = [], []  # per job: chunks on disk, chunks in all
    for job, (store, texts, description) in enumerate(jobs):
        pending = store.pending(len(texts), chunk_size)
        chunks.append(chunk_count(len(texts), chunk_size))
        stored.append(chunks[-1] - len(pending))
        if stored[-1]:
            log.info(f"{description}: resumed, {stored[-1]} of {chunks[-1]} chunks were already on disk")
        units += [texts[start:stop] for _, start, stop in pending]
        owners += [(job, chunk) for chunk, _, _ in pending]
    if jobs:
        runstate.progress(stored[0], chunks[0], f"chunks ({jobs[0][2]})")
    with tqdm(total=len(units), desc="encode", unit="chunk", disable=None) as bar:
        for position, vectors in engine.map(make_encoder, units):
            job, chunk = owners[position]
            jobs[job][0].put(chunk, vectors, dtype)
            stored[job] += 1
            bar.update()
            runstate.progress(stored[job], chunks[job], f"chunks ({jobs[job][2]})")
    for store, texts, _ in jobs:
        store.finish(len(texts), chunk_size, dtype)


def chunk_spans(count: int, chunk_size: int) -> list[tuple[int, int, int]]:
    """(chunk, start row, stop row) of every chunk of a store of `count` rows."""
    return [(i, i * chunk_size, min((i + 1) * chunk_size, count)) for i in range(chunk_count(count, chunk_size))]


def chunk_count(count: int, chunk_size: int) -> int:
    """Chunks of a store of `count` rows (one, empty, when there are none)."""
    return max(1, -(-count // chunk_size))


def gather_rows(store: EmbeddingStore, rows: np.ndarray) -> np.ndarray:
    """The vectors of `rows` (any order) without loading the whole store."""
    out = np.zeros((len(rows), store.dim), dtype=np.float32)
    offset = 0
    for chunk in store.iter_chunks():
        inside = (rows >= offset) & (rows < offset + len(chunk))
        out[inside] = chunk[rows[inside] - offset]
        offset += len(chunk)
    return out
