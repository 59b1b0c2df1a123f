"""Label indexes behind one interface (`exact`, `faiss`), looked up by name and imported lazily."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from eztag.embeddings import EmbeddingStore
from eztag.registry import Registry


class LabelIndex(ABC):
    """Top-k inner-product search over label vectors; results are label row numbers (-1 = none)."""

    exact: bool = False
    build_options: tuple[str, ...] = ()
    """Keyword options that change what `build` makes; the others only change searching, so one built index serves
    them all (the index cache's key holds these only)."""

    @abstractmethod
    def build(self, labels: EmbeddingStore) -> None:
        """Index every vector of the store."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 [n, k], label rows int64 [n, k]), best first."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the index files into `directory`."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, **options: Any) -> LabelIndex:
        """Read an index written by `save`."""


class UpdatableIndex(LabelIndex):
    """A label index that a changed label set can update instead of building it anew: the vectors of new labels are
    appended as new slots, and each slot maps to a label row, -1 for a stale slot (a label no longer in the set), which
    search never returns."""

    slot_rows: np.ndarray | None = None
    """Slot -> label row (-1: stale); None: slot i holds row i."""

    @abstractmethod
    def can_update(self) -> bool:
        """Whether this index, where it searches, can hide stale slots."""

    @abstractmethod
    def update(self, added: np.ndarray, slot_rows: np.ndarray) -> None:
        """Append the vectors `added` (float32) as new slots, then map every slot to a label row by `slot_rows`."""


INDEXES: Registry[LabelIndex] = Registry(
    "index", {"exact": "eztag.indexes.exact:ExactIndex", "faiss": "eztag.indexes.faiss:FaissIndex"}
)


def index_class(backend: str) -> type[LabelIndex]:
    """The index class registered as `backend`."""
    return INDEXES.get(backend, field="index.backend")
