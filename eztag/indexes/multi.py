"""Multi-vector labels (a label's own text plus its synonyms) over any single-vector index.

`search(queries, k)` asks the inner index for the k * `overfetch` nearest vectors, takes the labels owning them as
candidates and scores every candidate exactly against all of its vectors (`eztag.semantics.label_scores`). With
`max` over an exact inner index the result is exact whenever the fetched vectors name at least k labels: a label
left out has no vector above the last one fetched. `centroid` and `local_centre` can miss a label none of whose
vectors is among the fetched ones; a larger `overfetch` (or `exhaustive`) bounds that, at the cost of more
candidates to rescore.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from eztag.artifacts import write_npy
from eztag.embeddings import EmbeddingStore
from eztag.indexes import LabelIndex
from eztag.semantics import label_scores, pad_label_sets

VECTORS, OWNERS = "vectors.npy", "owners.npy"


class MultiVectorIndex(LabelIndex):
    """Search an inner index over all label vectors, then aggregate per label (label rows, as `LabelIndex`)."""

    def __init__(
        self,
        inner: LabelIndex,
        owners: np.ndarray,
        *,
        aggregation: str = "local_centre",
        local_k: int = 3,
        overfetch: int = 4,
        batch_size: int = 64,
    ) -> None:
        self.inner = inner
        self.owners = np.asarray(owners, dtype=np.int64)
        self.n_labels = int(self.owners.max()) + 1
        self.aggregation = aggregation
        self.local_k = local_k
        self.overfetch = overfetch
        self.batch_size = batch_size
        self.exact = inner.exact and aggregation == "max"
        self.padded = np.zeros((0, 0, 0), dtype=np.float32)
        self.mask = np.zeros((0, 0), dtype=bool)
        self.vectors = np.zeros((0, 0), dtype=np.float32)

    def build(self, labels: EmbeddingStore) -> None:
        self.inner.build(labels)
        self.set_vectors(labels.load())

    def set_vectors(self, vectors: np.ndarray) -> None:
        """Hold every label vector (`vectors`, rows as the owners'), padded into one set per label for rescoring."""
        self.vectors = vectors
        self.padded, self.mask = pad_label_sets(vectors, self.owners, self.n_labels)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.n_labels)
        _, rows = self.inner.search(queries, min(k * self.overfetch, len(self.owners)))
        return self._aggregate(queries, np.where(rows >= 0, self.owners[np.maximum(rows, 0)], -1), k)

    def _aggregate(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of each query's candidate labels (-1 = none) by the aggregated score, in query batches."""
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_rows = np.full((len(queries), k), -1, dtype=np.int64)
        for start in range(0, len(queries), self.batch_size):
            stop = min(start + self.batch_size, len(queries))
            batch = candidates[start:stop]
            union = np.unique(batch[batch >= 0])
            scores = label_scores(
                np.asarray(queries[start:stop], dtype=np.float32),
                self.padded[union],
                self.mask[union],
                self.aggregation,
                self.local_k,
            )
            allowed = np.zeros(scores.shape, dtype=bool)
            query, slot = np.nonzero(batch >= 0)
            allowed[query, np.searchsorted(union, batch[query, slot])] = True
            scores = np.where(allowed, scores, -np.inf)
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            top = np.take_along_axis(scores, order, axis=1)
            width = top.shape[1]
            out_scores[start:stop, :width] = top
            out_rows[start:stop, :width] = np.where(top > -np.inf, union[order], -1)
        return out_scores, out_rows

    def exhaustive(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The same aggregation over every label: the reference that `search` approximates."""
        every = np.broadcast_to(np.arange(self.n_labels), (len(queries), self.n_labels))
        return self._aggregate(queries, every, min(k, self.n_labels))

    def save(self, directory: Path) -> None:
        self.inner.save(directory)
        write_npy(directory / VECTORS, self.vectors)
        write_npy(directory / OWNERS, self.owners)

    @classmethod
    def load(cls, directory: Path, **options: Any) -> MultiVectorIndex:
        """`options`: `inner` (the loaded inner index) and the keyword options of the constructor."""
        index = cls(options.pop("inner"), np.load(directory / OWNERS), **options)
        index.set_vectors(np.load(directory / VECTORS))
        return index
