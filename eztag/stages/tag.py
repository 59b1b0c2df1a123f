"""Tag: retrieve the top-k labels of every document into Parquet and a CSR `.npz` (PECOS / pyxclib layout)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from tqdm import tqdm

from eztag import runstate
from eztag.artifacts import atomic_path, write_json, write_parquet
from eztag.embeddings import EmbeddingStore
from eztag.indexes import LabelIndex
from eztag.semantics import conse_queries
from eztag.stages import distil as distil_stage
from eztag.stages import index as index_stage
from eztag.stages.contract import StageInputs, no_fingerprint

NAME = "tag"
HELP = "retrieve the top-k labels of every document"
REQUIRES = ("ingest", "encode", "index")
OPTIONAL = ("distil",)  # when in the pipeline: tag with the distilled encoder's embeddings and index
CONFLICTS: dict[str, str] = {}
PATH_FIELDS: tuple[str, ...] = ()
fingerprint = no_fingerprint


@dataclasses.dataclass
class ConSE:
    """`[tag.conse]`: search again with (1 - alpha) document + alpha * softmax(top-T scores / temperature) - weighted
    label vectors (the labels' own-text vectors from encode)."""

    top: int = 5
    alpha: float = 0.5
    temperature: float = 0.05

    def __post_init__(self) -> None:
        if self.top < 1 or self.temperature <= 0 or not 0 <= self.alpha <= 1:
            raise ValueError("conse needs top >= 1, temperature > 0 and 0 <= alpha <= 1")


@dataclasses.dataclass
class Config:
    """How many labels each document gets, and ConSE expansion (`[tag.conse]`, off when absent)."""

    k: int = 100
    threshold: float | None = None
    min_per_doc: int = 0
    max_per_doc: int | None = None
    conse: ConSE | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k must be at least 1")
        if self.min_per_doc < 0 or (
            self.max_per_doc is not None and not self.min_per_doc <= self.max_per_doc <= self.k
        ):
            raise ValueError("need 0 <= min_per_doc <= max_per_doc <= k")


def select(scores: np.ndarray, config: Config) -> np.ndarray:
    """Boolean mask of the kept (document, rank) cells: threshold, then per-document minimum and maximum."""
    keep = scores > -np.inf
    if config.threshold is not None:
        keep &= scores >= config.threshold
    ranks = np.arange(scores.shape[1])[None, :]
    keep |= (ranks < config.min_per_doc) & (scores > -np.inf)
    if config.max_per_doc is not None:
        keep &= ranks < config.max_per_doc
    return keep


def search(
    index: LabelIndex, queries: np.ndarray, k: int, conse: ConSE | None, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, label rows) of the queries; with ConSE, of the queries mixed with their top-T labels."""
    if conse is None or labels is None:
        return index.search(queries, k)
    scores, rows = index.search(queries, min(conse.top, len(labels)))
    scores = np.where(rows >= 0, scores, -np.inf)
    expanded = conse_queries(queries, scores, np.maximum(rows, 0), labels, conse.alpha, conse.temperature)
    return index.search(expanded, k)


def shard_frame(
    doc_ids: list[str], label_ids: np.ndarray, scores: np.ndarray, rows: np.ndarray, keep: np.ndarray
) -> pl.DataFrame:
    """Long-format rows (doc_id, rank, label_id, score, label_row) for the kept cells."""
    keep &= rows >= 0
    doc_index, rank = np.nonzero(keep)
    return pl.DataFrame(
        {
            "doc_id": np.asarray(doc_ids, dtype=object)[doc_index].tolist(),
            "rank": (rank + 1).astype(np.int32),
            "label_id": label_ids[rows[doc_index, rank]].tolist(),
            "score": scores[doc_index, rank].astype(np.float32),
            "label_row": rows[doc_index, rank].astype(np.int64),
            "doc_row": doc_index.astype(np.int64),
        }
    )


def run(config: Config, out_dir: Path, inputs: StageInputs) -> dict[str, Any]:
    """Search every document chunk (resumable shard by shard) and write tags.parquet and tags.npz."""
    ingest_dir = inputs["ingest"]
    encode_dir = inputs["encode"]
    index_dir = inputs["index"]
    distil_dir = inputs.get("distil")
    if distil_dir is not None:
        encode_dir, index_dir = distil_dir / distil_stage.ENCODE_DIR, distil_dir / distil_stage.INDEX_DIR
    doc_ids = pl.read_parquet(ingest_dir / "documents.parquet", columns=["doc_id"])["doc_id"].to_list()
    label_ids = np.asarray(pl.read_parquet(index_dir / "label_ids.parquet")["label_id"].to_list(), dtype=object)
    if config.k > len(label_ids):
        print(
            f"tag: k = {config.k} is more than the {len(label_ids)} labels; each document gets at most {len(label_ids)}"
        )
    index = index_stage.load_index(index_dir)
    label_vectors = EmbeddingStore(encode_dir / "labels").load() if config.conse else None
    store = EmbeddingStore(encode_dir / "documents")
    shards = out_dir / "shards"
    shards.mkdir(exist_ok=True)
    offset = 0
    with tqdm(total=store.count, desc="tag", unit="doc", disable=None) as bar:
        for i, chunk in enumerate(store.iter_chunks()):
            shard = shards / f"part-{i:05d}.parquet"
            if not shard.exists():
                scores, rows = search(index, np.asarray(chunk, dtype=np.float32), config.k, config.conse, label_vectors)
                frame = shard_frame(
                    doc_ids[offset : offset + len(chunk)], label_ids, scores, rows, select(scores, config)
                )
                write_parquet(shard, frame.with_columns(pl.col("doc_row") + offset))
            offset += len(chunk)
            bar.update(len(chunk))
            runstate.progress(offset, store.count, "documents")
    tags = pl.concat([pl.read_parquet(path) for path in sorted(shards.glob("part-*.parquet"))])
    matrix = sp.csr_matrix(
        (tags["score"].to_numpy(), (tags["doc_row"].to_numpy(), tags["label_row"].to_numpy())),
        shape=(len(doc_ids), len(label_ids)),
        dtype=np.float32,
    )
    write_parquet(out_dir / "tags.parquet", tags.select("doc_id", "rank", "label_id", "score"))
    with atomic_path(out_dir / "tags.npz") as tmp, open(tmp, "wb") as handle:
        sp.save_npz(handle, matrix)
    for path in shards.glob("part-*.parquet"):
        path.unlink()
    shards.rmdir()
    summary = {
        "documents": len(doc_ids),
        "labels": len(label_ids),
        "tags": tags.height,
        "documents_without_tags": len(doc_ids) - tags["doc_id"].n_unique(),
    }
    write_json(out_dir / "report.json", summary)
    return summary
