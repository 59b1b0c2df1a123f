"""Shared by the index tests: real MiniLM vectors of the debtags texts, and embedding stores made from arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eztag.embeddings import EmbeddingStore


@pytest.fixture(scope="module")
def vectors(minilm, debtags_texts) -> tuple[np.ndarray, np.ndarray]:
    """(document vectors, label vectors), encoded once for each test module."""
    documents, labels = debtags_texts
    return minilm.encode(documents), minilm.encode(labels)


def store_of(directory: Path, matrix: np.ndarray) -> EmbeddingStore:
    """An embedding store in `directory` holding the rows of `matrix`, in chunks of 100."""
    store = EmbeddingStore(directory)
    store.write(list(range(len(matrix))), lambda rows: matrix[list(rows)], chunk_size=100)
    return store
