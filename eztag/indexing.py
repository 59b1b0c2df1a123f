"""Indexing: build a run's label index from its configuration, save it with its label-id map and spec, load it back,
and measure the recall of approximate indexes (the index stage's work; distil indexes its student the same way)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from eztag.artifacts import write_json, write_parquet
from eztag.devices import check_device
from eztag.embeddings import EmbeddingStore
from eztag.indexes import INDEXES, LabelIndex, index_class
from eztag.indexes.multi import MultiVectorIndex

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


def backend_options(config: IndexConfig) -> dict[str, Any]:
    """The backend's keyword options: device, precision and `[index.options]`."""
    return {"device": config.device, "precision": config.precision, **config.options}


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


def write_index(
    config: IndexConfig, ingest_dir: Path, encode_dir: Path, synonyms_dir: Path | None, out_dir: Path
) -> dict[str, Any]:
    """Build the index over `encode_dir`/labels (or, with synonyms, `synonyms_dir`/vectors) and save it into
    `out_dir` with index.json, label_ids.parquet and report.json."""
    index = build_index(config)
    labels = EmbeddingStore(encode_dir / "labels")
    multi = None
    if synonyms_dir is not None:
        labels = EmbeddingStore(synonyms_dir / "vectors")
        multi = {field: getattr(config, field) for field in MULTI_VECTOR_FIELDS}
        index = MultiVectorIndex(index, np.load(synonyms_dir / "owners.npy"), **multi)
    started = time.perf_counter()
    index.build(labels)
    build_seconds = time.perf_counter() - started
    index.save(out_dir)
    write_json(
        out_dir / "index.json", {"backend": config.backend, "options": backend_options(config), "multi_vector": multi}
    )
    label_ids = pl.read_parquet(ingest_dir / "labels.parquet", columns=["label_id"])
    write_parquet(out_dir / "label_ids.parquet", label_ids)
    report: dict[str, Any] = {
        "backend": config.backend,
        "labels": label_ids.height,
        "vectors": labels.count,
        "dim": labels.dim,
        "build_seconds": round(build_seconds, 3),
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
