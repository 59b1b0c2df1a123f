"""Embedding stores: a directory of `.npy` chunks written atomically, so a killed encode resumes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from eztag import runstate
from eztag.artifacts import write_json, write_npy

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

    def write(
        self,
        texts: Sequence[Any],
        encode: Callable[[Sequence[Any]], np.ndarray],
        *,
        chunk_size: int,
        dtype: str = "float32",
        description: str = "encoding",
    ) -> None:
        """Encode `texts` chunk by chunk, skipping chunks already on disk, then write meta.json."""
        self.directory.mkdir(parents=True, exist_ok=True)
        n_chunks = max(1, -(-len(texts) // chunk_size))
        done = sum(self.chunk_path(i).exists() for i in range(n_chunks))
        dim = None
        runstate.progress(0, n_chunks, f"chunks ({description})")
        with tqdm(total=len(texts), desc=description, unit="text", disable=None) as bar:
            for i in range(n_chunks):
                start, stop = i * chunk_size, min((i + 1) * chunk_size, len(texts))
                path = self.chunk_path(i)
                if path.exists():
                    dim = int(np.load(path, mmap_mode="r").shape[1])
                else:
                    vectors = np.ascontiguousarray(encode(texts[start:stop]), dtype=dtype)
                    dim = vectors.shape[1]
                    write_npy(path, vectors)
                bar.update(stop - start)
                runstate.progress(i + 1, n_chunks, f"chunks ({description})")
        if done:
            print(f"{description}: resumed, {done} of {n_chunks} chunks were already on disk")
        write_json(
            self.directory / META,
            {"count": len(texts), "dim": dim, "dtype": dtype, "chunk_size": chunk_size, "chunks": n_chunks},
        )

    def iter_chunks(self) -> Iterator[np.ndarray]:
        """Each chunk as a read-only memory map, in row order."""
        for i in range(int(self.meta["chunks"])):
            yield np.load(self.chunk_path(i), mmap_mode="r")

    def load(self) -> np.ndarray:
        """All vectors in one array (float32)."""
        return np.concatenate([np.asarray(chunk, dtype=np.float32) for chunk in self.iter_chunks()])


def gather_rows(store: EmbeddingStore, rows: np.ndarray) -> np.ndarray:
    """The vectors of `rows` (any order) without loading the whole store."""
    out = np.zeros((len(rows), store.dim), dtype=np.float32)
    offset = 0
    for chunk in store.iter_chunks():
        inside = (rows >= offset) & (rows < offset + len(chunk))
        out[inside] = chunk[rows[inside] - offset]
        offset += len(chunk)
    return out
