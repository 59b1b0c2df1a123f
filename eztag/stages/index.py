"""Index: build the label index, save it with its label-id map, and measure recall of approximate indexes."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from eztag.artifacts import write_json, write_parquet
from eztag.embeddings import EmbeddingStore
from eztag.indexes import INDEXES, LabelIndex, index_class

NAME = "index"
REQUIRES = ("ingest", "encode")
PATH_FIELDS: tuple[str, ...] = ()


@dataclasses.dataclass
class Config:
    """Which index to build and how to search it."""

    backend: str = "exact"
    factory: str = "Flat"
    nprobe: int | None = None
    ef_search: int | None = None
    train_size: int = 100_000
    device: str = "auto"
    precision: str = "auto"
    recall_sample: int = 1000
    recall_k: list[int] = dataclasses.field(default_factory=lambda: [10, 100])

    def __post_init__(self) -> None:
        if self.backend not in INDEXES:
            raise ValueError(f"unknown backend '{self.backend}' (expected one of: {', '.join(INDEXES)})")


def options(config: Config) -> dict[str, Any]:
    """Backend keyword options from the stage config."""
    return {
        key: value
        for key, value in dataclasses.asdict(config).items()
        if key not in ("backend", "recall_sample", "recall_k")
    }


def load_index(index_dir: Path) -> LabelIndex:
    """Load the index this stage saved, with the options it was built with (from index.json)."""
    spec = json.loads((index_dir / "index.json").read_text())
    return index_class(spec["backend"]).load(index_dir, **spec["options"])


def recall_against_exact(
    index: LabelIndex, labels: EmbeddingStore, queries: np.ndarray, ks: list[int]
) -> dict[str, float]:
    """Mean recall@k of `index` against exact search, for each k."""
    exact = index_class("exact")(device="cpu")
    exact.build(labels)
    k_max = min(max(ks), labels.count)
    _, truth = exact.search(queries, k_max)
    _, found = index.search(queries, k_max)
    out = {}
    for k in ks:
        k = min(k, k_max)
        hits = [len(set(t[:k]) & set(f[:k])) / k for t, f in zip(truth, found, strict=True)]
        out[f"recall@{k}"] = float(np.mean(hits))
    return out


def run(config: Config, out_dir: Path, ingest_dir: Path, encode_dir: Path) -> dict[str, Any]:
    """Build the index over encode/labels and save it with label_ids.parquet and report.json."""
    labels = EmbeddingStore(encode_dir / "labels")
    index = index_class(config.backend)(**options(config))
    started = time.perf_counter()
    index.build(labels)
    build_seconds = time.perf_counter() - started
    index.save(out_dir)
    write_json(out_dir / "index.json", {"backend": config.backend, "options": options(config)})
    write_parquet(out_dir / "label_ids.parquet", pl.read_parquet(ingest_dir / "labels.parquet", columns=["label_id"]))
    report: dict[str, Any] = {
        "backend": config.backend,
        "labels": labels.count,
        "dim": labels.dim,
        "build_seconds": round(build_seconds, 3),
        "exact": index.exact,
    }
    if not index.exact:
        documents = EmbeddingStore(encode_dir / "documents").load()
        sample = np.random.default_rng(0).permutation(len(documents))[: config.recall_sample]
        report["recall_vs_exact"] = recall_against_exact(index, labels, documents[np.sort(sample)], config.recall_k)
        report["recall_sample"] = len(sample)
    write_json(out_dir / "report.json", report)
    return report
