"""Indexing: build a run's label index from its configuration, save it with its label-id map and spec, load it back,
and measure the recall of approximate indexes (the index stage's work; distil indexes its student the same way)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from eztag import entry_caches
from eztag.artifacts import atomic_dir, config_hash, copy_files, file_checksum, write_json, write_parquet
from eztag.devices import check_device
from eztag.embeddings import EmbeddingStore, gather_rows
from eztag.index_updates import Update, plan_update, slots_file, vector_digests
from eztag.indexes import INDEXES, LabelIndex, UpdatableIndex, index_class
from eztag.indexes.multi import MultiVectorIndex
from eztag.runlock import file_lock

MULTI_VECTOR_FIELDS = ("aggregation", "local_k", "overfetch")


@dataclasses.dataclass
class IndexConfig:
    """Which index to build and how to search it; with a synonyms stage, how label vector sets are scored.

    `options` (`[index.options]`) are the backend's own keyword options: exact: label_chunk_size,
    query_batch_size; faiss: factory, nprobe, ef_search, ef_construction, train_size, seed. `aggregation`,
    `local_k` and `overfetch` apply only to multi-vector labels (see eztag.indexes.multi).
    """

    backend: str = "exact"
    """`exact` (torch matrix product and top-k over label chunks, the same result as exhaustive search) or `faiss` (any
    FAISS index; needs `eztag[faiss]`)."""
    device: str = "auto"
    """`cpu`, `cuda` or `cuda:N`; `auto`: exact keeps the label matrix on the first CUDA GPU when there is one, else
    searches on the CPU; faiss uses the GPU when its build has GPUs, except with `cpu`."""
    precision: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """exact: precision of the label matrix and the products (`auto`: float16 on a GPU, float32 on the CPU); faiss
    accepts only `auto` (the vectors or codes its factory string names)."""
    options: dict = dataclasses.field(default_factory=dict)
    """`[index.options]`, the backend's own keyword options (an unknown one is an error): exact `label_chunk_size`,
    `query_batch_size`; faiss `factory` (default `Flat`), `nprobe`, `ef_search`, `ef_construction`, `train_size`,
    `seed`."""
    cache: str | None = None
    """A folder (relative to the pipeline file's folder) of built indexes shared between runs, keyed by
    sha256(label vector files, synonym owners, backend, the options that change a build): an index already there is
    copied instead of built, so a nightly run over the same labels and encoder skips a FAISS HNSW or IVF build
    (minutes at 10^6 labels); search options (`nprobe`, `ef_search`, exact's) can differ; entries stay until
    `eztag prune-cache` removes them. `None`: no cache."""
    update_limit: float = 0.1
    """With `cache`, for a label set whose index is not there: update the cached index (FAISS on the CPU) of the
    earlier set that shares the most vectors with it, same backend and build options, instead of building anew — its
    new vectors added, the vectors of labels gone hidden from search — when those are at most this fraction of the
    updated index (`eztag.index_updates`); past it, or 0, a new build. An HNSW build of 10^6 labels takes minutes;
    updating it for a few thousand changed labels, seconds."""
    recall_sample: int = 1000
    """Documents (drawn at random) on which an approximate index's recall against exact search is measured when it is
    built, into `index/report.json`."""
    recall_k: list[int] = dataclasses.field(default_factory=lambda: [10, 100])
    """Cut-offs k of that recall@k measurement."""
    aggregation: Literal["max", "centroid", "local_centre"] = "local_centre"
    """How a multi-vector label (with a synonyms stage only) is scored against a document: `max` (its best vector),
    `centroid` (cosine to the mean of its vectors) or `local_centre` (cosine to the mean of its `local_k` vectors
    nearest the document)."""
    local_k: int = 3
    """Vectors averaged by `local_centre` (1 is `max`; the label's set size or more is `centroid`)."""
    overfetch: int = 4
    """Multi-vector search fetches k * `overfetch` nearest vectors and scores the labels owning them; more bounds the
    labels `centroid` and `local_centre` can miss, at the cost of more candidates to rescore."""

    def __post_init__(self) -> None:
        check_device(self.device, field="index.device")
        INDEXES.check_options(self.backend, backend_options(self), field="index.options")
        if self.local_k < 1 or self.overfetch < 1:
            raise ValueError("local_k and overfetch must be at least 1")
        if not 0 <= self.update_limit <= 1:
            raise ValueError(f"update_limit must be between 0 and 1, not {self.update_limit}")


def backend_options(config: IndexConfig) -> dict[str, Any]:
    """The backend's keyword options: device, precision and `[index.options]`."""
    return {"device": config.device, "precision": config.precision, **config.options}


def multi_vector_options(config: IndexConfig) -> dict[str, Any]:
    """The multi-vector index's keyword options (with a synonyms stage)."""
    return {field: getattr(config, field) for field in MULTI_VECTOR_FIELDS}


def build_index(config: IndexConfig) -> LabelIndex:
    """An empty index of the configured backend."""
    return INDEXES.create(config.backend, options=backend_options(config), field="index.options")


def load_index(index_dir: Path) -> LabelIndex:
    """Load the index `write_index` saved, with the options it was built with (from index.json)."""
    spec = json.loads((index_dir / "index.json").read_text())
    index = index_class(spec["backend"]).load(index_dir, **spec["options"])
    if spec.get("multi_vector"):
        return MultiVectorIndex.load(index_dir, inner=index, **spec["multi_vector"])
    return index


def recall_against(
    reference: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    index: LabelIndex,
    queries: np.ndarray,
    ks: list[int],
) -> dict[str, float]:
    """Mean recall@k of `index.search` against the `reference` search, for each k."""
    k_max = max(ks)
    _, truth = reference(queries, k_max)
    _, found = index.search(queries, k_max)
    k_max = truth.shape[1]
    out = {}
    for k in ks:
        k = min(k, k_max)
        hits = [len(set(t[:k]) & set(f[:k])) / k for t, f in zip(truth, found, strict=True)]
        out[f"recall@{k}"] = float(np.mean(hits))
    return out


def recall_against_exact(
    index: LabelIndex, labels: EmbeddingStore, queries: np.ndarray, ks: list[int]
) -> dict[str, float]:
    """Mean recall@k of `index` against exact search, for each k."""
    exact = INDEXES.create("exact", options={"device": "cpu"}, field="index.options")
    exact.build(labels)
    return recall_against(exact.search, index, queries, ks)


def over_inner(config: IndexConfig, inner: LabelIndex, owners: np.ndarray | None) -> LabelIndex:
    """`inner` itself, or with synonym `owners` (vector row -> label row) the multi-vector index over it."""
    return inner if owners is None else MultiVectorIndex(inner, owners, **multi_vector_options(config))


def built_index(config: IndexConfig, labels: EmbeddingStore, owners: np.ndarray | None) -> LabelIndex:
    """The configured index built over `labels`; with synonym `owners`, multi-vector."""
    index = over_inner(config, build_index(config), owners)
    index.build(labels)
    return index


def updated_index(config: IndexConfig, labels: EmbeddingStore, owners: np.ndarray | None, update: Update) -> LabelIndex:
    """The cached index `update.base` updated to the vectors of `labels`; with synonym `owners`, multi-vector."""
    inner = index_class(config.backend).load(update.base, **backend_options(config))
    if not isinstance(inner, UpdatableIndex):
        raise TypeError(f"the {config.backend} index cannot be updated")
    inner.update(gather_rows(labels, update.added_rows), update.slot_rows)
    index = over_inner(config, inner, owners)
    if isinstance(index, MultiVectorIndex):
        index.set_vectors(labels.load())
    return index


def build_settings(config: IndexConfig) -> dict[str, Any]:
    """The options of `[index.options]` that change what a build makes."""
    return {name: value for name, value in config.options.items() if name in index_class(config.backend).build_options}


def cache_key(config: IndexConfig, labels: EmbeddingStore, owners: np.ndarray | None) -> str:
    """The index cache's key: the label vectors' bytes, the synonym owners, the backend and its build options."""
    vectors = [file_checksum(path) for path in sorted(labels.directory.glob("chunk-*.npy"))]
    owner_rows = None if owners is None else hashlib.sha256(owners.astype(np.int64).tobytes()).hexdigest()
    return config_hash([config.backend, build_settings(config), vectors, owner_rows])


def index_family(config: IndexConfig, labels: EmbeddingStore) -> str:
    """The family of indexes that can be updated into one another: backend, build options, dimension."""
    return config_hash([config.backend, build_settings(config), labels.dim])


def updatable(config: IndexConfig) -> bool:
    """Whether the configured index, where it searches, can be updated for a changed label set."""
    index = build_index(config)
    return isinstance(index, UpdatableIndex) and index.can_update()


def fill_cache_entry(
    cache: Path, entry: Path, config: IndexConfig, labels: EmbeddingStore, owners: np.ndarray | None
) -> tuple[LabelIndex, Update | None]:
    """Build the index into the cache entry `entry`, or update an earlier set's (`update_limit`), with its slot
    file; the index and the update made, if one was."""
    if not updatable(config):
        index, update = built_index(config, labels, owners), None
    else:
        family = index_family(config, labels)
        digests = vector_digests(labels)
        update = plan_update(cache, family, digests, config.update_limit) if config.update_limit > 0 else None
        if update is None:
            index = built_index(config, labels, owners)
        else:
            index = updated_index(config, labels, owners, update)
            entry_caches.mark_used(update.base)
        write_parquet(slots_file(entry, family), digests if update is None else update.slot_digests)
    with atomic_dir(entry) as tmp:
        index.save(tmp)
    return index, update


def cached_index(
    cache: Path, config: IndexConfig, labels: EmbeddingStore, owners: np.ndarray | None, out_dir: Path
) -> tuple[LabelIndex, dict[str, Any]]:
    """The index from the folder `cache`, copied into `out_dir` (index.json already there), and the report's
    `from_cache` and `updated_from`: put into the cache first when it was not there, by one run at a time for each
    key."""
    entry = cache / cache_key(config, labels, owners)
    update = None
    with file_lock(entry_caches.entry_lock(entry)):
        from_cache = entry.is_dir()
        if not from_cache:
            index, update = fill_cache_entry(cache, entry, config, labels, owners)
        elif updatable(config) and not (slots := slots_file(entry, index_family(config, labels))).exists():
            # an entry built before slot files, or where FAISS searched on GPUs: never updated, slot i holds row i
            write_parquet(slots, vector_digests(labels))
    entry_caches.mark_used(entry)
    copy_files(entry, out_dir)
    if from_cache:
        index = load_index(out_dir)
    return index, {"from_cache": from_cache, "updated_from": update and update.summary()}


def write_index(
    config: IndexConfig, ingest_dir: Path, encode_dir: Path, synonyms_dir: Path | None, out_dir: Path
) -> dict[str, Any]:
    """Build the index over `encode_dir`/labels (or, with synonyms, `synonyms_dir`/vectors), or copy it from
    `config.cache`, and save it into `out_dir` with index.json, label_ids.parquet and report.json."""
    labels = EmbeddingStore(encode_dir / "labels")
    owners, multi = None, None
    if synonyms_dir is not None:
        labels = EmbeddingStore(synonyms_dir / "vectors")
        owners = np.load(synonyms_dir / "owners.npy")
        multi = multi_vector_options(config)
    write_json(
        out_dir / "index.json", {"backend": config.backend, "options": backend_options(config), "multi_vector": multi}
    )
    started = time.perf_counter()
    if config.cache is None:
        index, provenance = built_index(config, labels, owners), {"from_cache": False, "updated_from": None}
        index.save(out_dir)
    else:
        with entry_caches.using(config.cache, "index.cache") as cache:
            index, provenance = cached_index(cache, config, labels, owners, out_dir)
    build_seconds = time.perf_counter() - started
    label_ids = pl.read_parquet(ingest_dir / "labels.parquet", columns=["label_id"])
    write_parquet(out_dir / "label_ids.parquet", label_ids)
    report: dict[str, Any] = {
        "backend": config.backend,
        "labels": label_ids.height,
        "vectors": labels.count,
        "dim": labels.dim,
        "build_seconds": round(build_seconds, 3),
        **provenance,
        "exact": index.exact,
    }
    if not index.exact:
        documents = EmbeddingStore(encode_dir / "documents").load()
        sample = np.random.default_rng(0).permutation(len(documents))[: config.recall_sample]
        queries = documents[np.sort(sample)]
        if isinstance(index, MultiVectorIndex):
            report["recall_vs_exhaustive"] = recall_against(index.exhaustive, index, queries, config.recall_k)
        else:
            report["recall_vs_exact"] = recall_against_exact(index, labels, queries, config.recall_k)
        report["recall_sample"] = len(sample)
    write_json(out_dir / "report.json", report)
    return report
