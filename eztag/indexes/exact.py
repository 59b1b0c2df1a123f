"""Exact search: chunked matrix product + top-k with torch, on the CPU or a CUDA GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from eztag.artifacts import write_npy
from eztag.devices import pick_device, pick_dtype
from eztag.embeddings import EmbeddingStore
from eztag.indexes import LabelIndex

FILE = "labels.npy"


def merge_topk(
    best_scores: torch.Tensor, best_rows: torch.Tensor, scores: torch.Tensor, rows: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two candidate lists per query into the k best."""
    all_scores = torch.cat([best_scores, scores], dim=1)
    all_rows = torch.cat([best_rows, rows], dim=1)
    top_scores, order = torch.topk(all_scores, min(k, all_scores.shape[1]), dim=1)
    return top_scores, torch.gather(all_rows, 1, order)


class ExactIndex(LabelIndex):
    """The label matrix in memory (fp16 on a GPU by default); queries in batches, labels in chunks."""

    exact = True

    def __init__(
        self,
        *,
        device: str = "auto",
        precision: str = "auto",
        label_chunk_size: int = 262_144,
        query_batch_size: int = 4096,
        **_: Any,
    ) -> None:
        self.device = pick_device(device)
        self.dtype = pick_dtype(precision, self.device)
        self.label_chunk_size = label_chunk_size
        self.query_batch_size = query_batch_size
        self.labels: torch.Tensor | None = None

    def _set(self, vectors: np.ndarray) -> None:
        self.labels = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(self.device, self.dtype)

    def build(self, labels: EmbeddingStore) -> None:
        self._set(labels.load())

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.labels is not None, "build or load the index first"
        n_labels = self.labels.shape[0]
        k = min(k, n_labels)
        out_scores = np.empty((len(queries), k), dtype=np.float32)
        out_rows = np.empty((len(queries), k), dtype=np.int64)
        for start in range(0, len(queries), self.query_batch_size):
            batch = torch.from_numpy(np.array(queries[start : start + self.query_batch_size], dtype=np.float32))
            batch = batch.to(self.device, self.dtype)
            best_scores = torch.empty((len(batch), 0), device=self.device, dtype=torch.float32)
            best_rows = torch.empty((len(batch), 0), device=self.device, dtype=torch.int64)
            for offset in range(0, n_labels, self.label_chunk_size):
                chunk = self.labels[offset : offset + self.label_chunk_size]
                scores = (batch @ chunk.T).float()
                top_scores, top_rows = torch.topk(scores, min(k, chunk.shape[0]), dim=1)
                best_scores, best_rows = merge_topk(best_scores, best_rows, top_scores, top_rows + offset, k)
            out_scores[start : start + len(batch)] = best_scores.cpu().numpy()
            out_rows[start : start + len(batch)] = best_rows.cpu().numpy()
        return out_scores, out_rows

    def save(self, directory: Path) -> None:
        assert self.labels is not None, "build the index first"
        write_npy(directory / FILE, self.labels.float().cpu().numpy())

    @classmethod
    def load(cls, directory: Path, **options: Any) -> ExactIndex:
        index = cls(**options)
        index._set(np.load(directory / FILE))
        return index
