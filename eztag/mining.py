"""Mining: candidate (document, label) pairs for the judge from the student's index, optionally with BM25 ones (the
mine stage's work; distil re-mines with each round's student the same way)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any, Literal

import numpy as np
import polars as pl

from eztag.embeddings import EmbeddingStore, gather_rows
from eztag.errors import missing_extra
from eztag.indexes import LabelIndex
from eztag.templates import DOCUMENT_COLUMNS, LABEL_COLUMNS, check_template, render_rows

SCHEMA: dict[Any, Any] = {  # Any: the key type polars' cast() expects
    "doc_id": pl.String,
    "label_id": pl.String,
    "source": pl.String,
    "student_score": pl.Float32,
    "student_rank": pl.Int32,
}


@dataclasses.dataclass
class MineConfig:
    """How many candidates per document, from where, and for which documents."""

    k: int = 30
    """Dense candidates per document: the top `k` labels of the encoder's index (at least 5 when distil follows)."""
    bm25_k: int = 0
    """BM25 candidates per document over the labels' `label_template` texts, added to the dense ones (needs
    `eztag[judge]`); 0: none."""
    documents_limit: int | None = None
    """How many documents to mine (and so to judge); `None`: all of them."""
    sample: Literal["first", "random"] = "first"
    """Which documents when `documents_limit` is set: `first` (in file order) or `random` (drawn with `seed`)."""
    seed: int = 0
    """Seed of the `random` document sample."""
    document_template: str = "{title} {text}"
    """Document text for BM25 (only with `bm25_k`): a `{field}` template over `{doc_id}`, `{title}` and `{text}`."""
    label_template: str = "{text} {description}"
    """Label text for BM25 (only with `bm25_k`): a `{field}` template over `{label_id}`, `{text}`, `{description}`
    and `{facet}`."""
    budget: int | None = None
    """Most candidate pairs to judge per pass (the judge stage, then each distil round), spent document by document
    (`budget_depth` candidates each), those where the student is least sure first (`budget_by`); distil's held-out
    documents always get their top-5 judged. `None`: every candidate is judged."""
    budget_by: Literal["gap", "random"] = "gap"
    """Which documents a `budget` goes to: `gap` (the smallest gap between the student's first two scores first)
    or `random` (drawn with `seed`; the control to compare `gap` with)."""
    budget_depth: int | None = None
    """Under a `budget`, how many of a document's candidates are judged: the student's first `budget_depth` (at least
    distil's `list_size`, so that each makes a training row); `None`: all of them."""

    def __post_init__(self) -> None:
        if self.k < 1 or self.bm25_k < 0:
            raise ValueError("need k >= 1 and bm25_k >= 0")
        if self.documents_limit is not None and self.documents_limit < 1:
            raise ValueError("documents_limit must be at least 1")
        if (self.budget is not None and self.budget < 1) or (self.budget_depth is not None and self.budget_depth < 1):
            raise ValueError("budget and budget_depth must be at least 1")
        check_template(self.document_template, DOCUMENT_COLUMNS, where="mine.document_template")
        check_template(self.label_template, LABEL_COLUMNS, where="mine.label_template")


def pick_documents(count: int, config: MineConfig) -> np.ndarray:
    """Row numbers of the documents to mine, ascending."""
    if config.documents_limit is None or config.documents_limit >= count:
        return np.arange(count)
    if config.sample == "first":
        return np.arange(config.documents_limit)
    return np.sort(np.random.default_rng(config.seed).choice(count, config.documents_limit, replace=False))


def within_budget(candidates: pl.DataFrame, config: MineConfig, always: Collection[str] = ()) -> pl.DataFrame:
    """The candidates to judge under `config.budget`: every candidate of the documents in `always`, then the first
    `config.budget_depth` candidates of documents in `config.budget_by` order while the budget lasts (all
    candidates without a budget)."""
    if config.budget is None:
        return candidates
    if config.budget_depth is not None:
        deep = pl.col("student_rank").is_null() | (pl.col("student_rank") > config.budget_depth)
        candidates = candidates.filter(pl.col("doc_id").is_in(list(always)) | ~deep)
    gaps = (
        candidates.filter(pl.col("student_rank") <= 2)
        .group_by("doc_id")
        .agg(gap=pl.col("student_score").max() - pl.col("student_score").min())
    )
    documents = candidates.group_by("doc_id", maintain_order=True).len().join(gaps, on="doc_id", how="left")
    if config.budget_by == "random":
        draw = np.random.default_rng(config.seed).permutation(documents.height)
        documents = documents.with_columns(gap=pl.Series(draw, dtype=pl.Float64))
    documents = documents.with_columns(always=pl.col("doc_id").is_in(list(always)), gap=pl.col("gap").fill_null(0.0))
    documents = documents.sort(["always", "gap", "doc_id"], descending=[True, False, False])
    chosen = documents.filter(pl.col("always") | (pl.col("len").cum_sum() <= config.budget))["doc_id"]
    return candidates.filter(pl.col("doc_id").is_in(chosen.to_list()))


def bm25_candidates(documents: list[str], labels: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(label rows [n, k], scores [n, k]) of BM25 over label texts; -1 where a label shares no term."""
    try:
        import bm25s
    except ImportError:
        raise missing_extra("bm25s", "judge") from None
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(labels, stopwords="en", show_progress=False), show_progress=False)
    queries = bm25s.tokenize(documents, stopwords="en", return_ids=False, show_progress=False)
    rows, scores = retriever.retrieve(queries, k=min(k, len(labels)), show_progress=False)
    return np.where(scores > 0, rows, -1), scores


def mine(
    config: MineConfig,
    documents: pl.DataFrame,
    labels: pl.DataFrame,
    doc_rows: np.ndarray,
    document_vectors: np.ndarray,
    index: LabelIndex,
    label_store: EmbeddingStore,
) -> pl.DataFrame:
    """Candidates (SCHEMA) of the documents at `doc_rows`, whose student vectors are `document_vectors`."""
    label_ids = np.asarray(labels["label_id"].to_list(), dtype=object)
    doc_ids = np.asarray(documents["doc_id"].to_list(), dtype=object)[doc_rows]
    scores, rows = index.search(document_vectors, min(config.k, len(label_ids)))
    doc_index, rank = np.nonzero(rows >= 0)
    dense = pl.DataFrame(
        {
            "doc_id": doc_ids[doc_index].tolist(),
            "label_row": rows[doc_index, rank],
            "student_score": scores[doc_index, rank].astype(np.float32),
            "student_rank": (rank + 1).astype(np.int32),
        }
    )
    candidates = dense.with_columns(source=pl.lit("dense"))
    if config.bm25_k:
        document_texts = render_rows(documents[doc_rows.tolist()], config.document_template)
        bm25_rows, _ = bm25_candidates(document_texts, render_rows(labels, config.label_template), config.bm25_k)
        doc_index, rank = np.nonzero(bm25_rows >= 0)
        lexical = pl.DataFrame({"doc_id": doc_ids[doc_index].tolist(), "label_row": bm25_rows[doc_index, rank]})
        lexical = lexical.with_columns(lexical=pl.lit(True))
        candidates = (
            dense.join(lexical, on=["doc_id", "label_row"], how="full", coalesce=True)
            .with_columns(
                source=pl.when(pl.col("student_rank").is_null())
                .then(pl.lit("bm25"))
                .when(pl.col("lexical"))
                .then(pl.lit("both"))
                .otherwise(pl.lit("dense"))
            )
            .drop("lexical")
        )
        candidates = _fill_student_scores(candidates, document_vectors, doc_ids, label_store)
    order = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    candidates = (
        candidates.with_columns(
            label_id=pl.Series(label_ids[candidates["label_row"].to_numpy()].tolist(), dtype=pl.String),
            doc_order=pl.col("doc_id").replace_strict(order, return_dtype=pl.Int64),
        )
        .sort("doc_order", "student_rank", "student_score", descending=[False, False, True], nulls_last=True)
        .select(list(SCHEMA))
        .cast(SCHEMA)
    )
    return candidates


def _fill_student_scores(
    candidates: pl.DataFrame, document_vectors: np.ndarray, doc_ids: np.ndarray, label_store: EmbeddingStore
) -> pl.DataFrame:
    """Inner products of the student's embeddings for the BM25-only pairs (their student_rank stays null)."""
    missing = candidates["student_score"].is_null().to_numpy()
    doc_row = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    doc_index = np.asarray([doc_row[doc_id] for doc_id in candidates["doc_id"].filter(missing)], dtype=np.int64)
    label_vectors = gather_rows(label_store, candidates["label_row"].to_numpy()[missing])
    filled = candidates["student_score"].to_numpy().astype(np.float32, copy=True)
    filled[missing] = np.einsum("ij,ij->i", document_vectors[doc_index], label_vectors)
    return candidates.with_columns(student_score=pl.Series(filled, dtype=pl.Float32))
