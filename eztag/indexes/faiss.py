"""FAISS indexes from any index-factory string (Flat, IVF, HNSW, IVF-PQ), on CPU or sharded over GPUs."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np

from eztag.artifacts import atomic_path, write_npy
from eztag.embeddings import EmbeddingStore
from eztag.errors import EztagError, missing_extra
from eztag.indexes import UpdatableIndex

log = logging.getLogger(__name__)

FILE, SLOT_ROWS = "index.faiss", "slot_rows.npy"


def import_faiss() -> Any:
    """The faiss module, or a one-line error naming the extra to install."""
    try:
        import faiss
    except ImportError:
        raise missing_extra("faiss", "faiss") from None
    return faiss


def estimate_bytes(factory: str, n: int, dim: int) -> int:
    """A rough size of the built index: vectors (flat, PQ or SQ codes) + IVF ids + HNSW links."""
    spec = factory.replace(" ", "")
    pq = re.search(r"PQ(\d+)(?:x(\d+))?", spec)
    sq = re.search(r"SQ(\d+)", spec)
    if pq:
        code = int(pq.group(1)) * int(pq.group(2) or 8) // 8
    elif sq:
        code = dim * int(sq.group(1)) // 8
    else:
        code = dim * 4
    per_vector: float = code + (8 if "IVF" in spec else 0)
    hnsw = re.search(r"HNSW(\d+)", spec)
    if hnsw:
        per_vector += 2 * int(hnsw.group(1)) * 4 * 1.1
    ivf = re.search(r"IVF(\d+)", spec)
    centroids = int(ivf.group(1)) * dim * 4 if ivf else 0
    return int(n * per_vector + centroids)


class FaissIndex(UpdatableIndex):
    """A FAISS inner-product index; trained on a seeded sample of the labels when it needs training. Updated for a
    changed label set (on the CPU), it hides its stale slots from search with an ID selector."""

    build_options = ("factory", "ef_construction", "train_size", "seed")

    def __init__(
        self,
        *,
        factory: str = "Flat",
        nprobe: int | None = None,
        ef_search: int | None = None,
        ef_construction: int | None = None,
        train_size: int = 100_000,
        device: str = "auto",
        precision: Literal["auto"] = "auto",  # FAISS searches float32 vectors or the codes `factory` names (SQfp16)
        seed: int = 0,
    ) -> None:
        self.faiss = import_faiss()
        self.factory = factory
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.ef_construction = ef_construction
        self.train_size = train_size
        self.use_gpu = device != "cpu" and getattr(self.faiss, "get_num_gpus", lambda: 0)() > 0
        self.seed = seed
        self.index: Any = None
        self.live = 0  # slots search may return
        self.live_bitmap: np.ndarray | None = None  # the selector reads it: kept alive with the index
        self.selector: Any = None
        self.exact = re.fullmatch(r"(IDMap2?,)?Flat", factory.replace(" ", "")) is not None

    def build(self, labels: EmbeddingStore) -> None:
        faiss = self.faiss
        log.info(
            f"faiss {self.factory}: {labels.count:,} x {labels.dim} vectors, "
            f"about {estimate_bytes(self.factory, labels.count, labels.dim) / 2**20:,.0f} MiB once built"
        )
        try:
            index = faiss.index_factory(labels.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            raise EztagError(
                f"bad FAISS factory string '{self.factory}': {str(error).splitlines()[0]}", field="index.factory"
            ) from None
        # Polysemous training (PQ codes ordered for Hamming filtering) only helps polysemous search, which eztag
        # never turns on, and it is most of an IVF-PQ build's time (126 s of 148 s for IVF128,PQ32 on 5,000 points).
        quantised = faiss.downcast_index(faiss.try_extract_index_ivf(index) or index)
        if hasattr(quantised, "do_polysemous_training"):
            quantised.do_polysemous_training = False
        if self.ef_construction is not None:
            if not hasattr(quantised, "hnsw"):
                raise EztagError(f"ef_construction needs an HNSW factory, not '{self.factory}'", field="index.options")
            quantised.hnsw.efConstruction = self.ef_construction
        if not index.is_trained:
            vectors = labels.load()
            sample = np.random.default_rng(self.seed).permutation(len(vectors))[: self.train_size]
            index.train(np.ascontiguousarray(vectors[np.sort(sample)]))
        self.index = index
        for chunk in labels.iter_chunks():
            self._add(chunk)
        self._configure()

    def _add(self, vectors: np.ndarray) -> None:
        """Append `vectors` as the next slots (an `IDMap` factory's ids are the slot numbers)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if hasattr(self.index, "id_map"):
            start = self.index.ntotal
            self.index.add_with_ids(vectors, np.arange(start, start + len(vectors), dtype=np.int64))
        else:
            self.index.add(vectors)

    def set_search(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the search-time settings (IVF `nprobe`, HNSW `efSearch`) of the built index, without a rebuild."""
        self.nprobe = self.nprobe if nprobe is None else nprobe
        self.ef_search = self.ef_search if ef_search is None else ef_search
        params = self.faiss.ParameterSpace()
        if self.nprobe is not None:
            params.set_index_parameter(self.index, "nprobe", self.nprobe)
        if self.ef_search is not None:
            params.set_index_parameter(self.index, "efSearch", self.ef_search)

    def can_update(self) -> bool:
        return not self.use_gpu

    def update(self, added: np.ndarray, slot_rows: np.ndarray) -> None:
        self._add(added)
        self._set_slots(slot_rows)

    def _set_slots(self, slot_rows: np.ndarray) -> None:
        if len(slot_rows) != self.index.ntotal:
            raise ValueError(f"{len(slot_rows):,} slot rows for an index of {self.index.ntotal:,} vectors")
        self.slot_rows = slot_rows
        live = slot_rows >= 0
        self.live = int(live.sum())
        self.live_bitmap, self.selector = None, None
        if not live.all():
            self.live_bitmap = np.packbits(live, bitorder="little")
            self.selector = self.faiss.IDSelectorBitmap(len(live), self.faiss.swig_ptr(self.live_bitmap))

    def _search_parameters(self) -> Any:
        """The search parameters hiding stale slots (IVF ones carry `nprobe`, which they override), or None."""
        if self.selector is None:
            return None
        ivf = self.faiss.try_extract_index_ivf(self.index)
        if ivf is None:
            return self.faiss.SearchParameters(sel=self.selector)
        return self.faiss.SearchParametersIVF(sel=self.selector, nprobe=ivf.nprobe)

    def _configure(self) -> None:
        faiss = self.faiss
        self.set_search()
        if self.use_gpu and self.selector is not None:
            log.warning(f"faiss: {self.factory} stays on the CPU: its stale slots are hidden by a CPU ID selector")
        elif self.use_gpu:
            options = faiss.GpuMultipleClonerOptions()
            options.shard = True
            try:
                self.index = faiss.index_cpu_to_all_gpus(self.index, co=options)
            except RuntimeError as error:
                log.warning(f"faiss: {self.factory} stays on the CPU ({str(error).splitlines()[0]})")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        live = self.index.ntotal if self.slot_rows is None else self.live
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores, slots = self.index.search(queries, min(k, live), params=self._search_parameters())
        if self.slot_rows is None:
            return scores.astype(np.float32), slots.astype(np.int64)
        rows = np.where(slots >= 0, self.slot_rows[np.maximum(slots, 0)], -1)
        return scores.astype(np.float32), rows.astype(np.int64)

    def save(self, directory: Path) -> None:
        index = self.index
        if self.use_gpu and hasattr(self.faiss, "index_gpu_to_cpu"):
            index = self.faiss.index_gpu_to_cpu(index)
        with atomic_path(directory / FILE) as tmp:
            self.faiss.write_index(index, str(tmp))
        if self.slot_rows is not None:
            write_npy(directory / SLOT_ROWS, self.slot_rows)

    @classmethod
    def load(cls, directory: Path, **options: Any) -> FaissIndex:
        index = cls(**options)
        index.index = index.faiss.read_index(str(directory / FILE))
        if (directory / SLOT_ROWS).exists():
            index._set_slots(np.load(directory / SLOT_ROWS))
        index._configure()
        return index
