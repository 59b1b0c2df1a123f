"""The state every distillation round shares, and what a round does with it: its training set, mining with its
student, and judging the new candidates through the shared judge cache."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from eztag.distillation.config import DistilConfig
from eztag.distillation.data import teacher_scores, training_rows
from eztag.distillation.selection import TOP_K
from eztag.embeddings import EmbeddingStore, gather_rows
from eztag.encoding import EncodeConfig, load_encoder, write_store
from eztag.engines import Engine
from eztag.errors import EztagError
from eztag.indexing import IndexConfig, build_index, load_index
from eztag.judges import Judge
from eztag.judging import JudgeConfig, build_judge, judge_cache, judge_candidates
from eztag.mining import MineConfig, mine, pick_documents, within_budget
from eztag.templates import render_rows


class Rounds:
    """The state shared by every round: the documents, the recorded upstream configs, the judge and its cache."""

    def __init__(
        self,
        config: DistilConfig,
        ingest_dir: Path,
        judge_dir: Path,
        upstream: tuple[EncodeConfig, IndexConfig, MineConfig, JudgeConfig],
        engine: Engine,
    ) -> None:
        self.config = config
        self.ingest_dir = ingest_dir
        self.encode_config, self.index_config, self.mine_config, self.judge_config = upstream
        if self.mine_config.k < TOP_K:
            raise EztagError(f"distil needs mine.k >= {TOP_K} for LLM-P@{TOP_K}", field="[mine]")
        self.cache_dir = judge_cache(self.judge_config, judge_dir)
        self.engine = engine
        self.documents = pl.read_parquet(ingest_dir / "documents.parquet")
        self.labels = pl.read_parquet(ingest_dir / "labels.parquet")
        self.doc_rows = pick_documents(self.documents.height, self.mine_config)
        doc_ids = self.documents["doc_id"].to_list()
        self.doc_ids = [doc_ids[row] for row in self.doc_rows]
        self.doc_row = {doc_id: i for i, doc_id in enumerate(self.doc_ids)}
        count = max(1, round(config.holdout * len(self.doc_ids)))
        if count >= len(self.doc_ids):
            raise EztagError("too few mined documents to hold some out; raise mine.documents_limit", field="[mine]")
        self.holdout = set(random.Random(config.seed).sample(self.doc_ids, count))
        mined = self.documents[self.doc_rows.tolist()]
        self.document_text = dict(
            zip(self.doc_ids, render_rows(mined, self.encode_config.document_template), strict=True)
        )
        label_texts = render_rows(self.labels, self.encode_config.label_template)
        self.label_text = dict(zip(self.labels["label_id"].to_list(), label_texts, strict=True))
        self.judge: Judge | None = None

    def reference(self, judgments: pl.DataFrame, doc_ids: set[str]) -> pl.DataFrame:
        """The judged (doc_id, label_row, log_odds) rows of `doc_ids`, for `agreement`."""
        label_rows = {label_id: row for row, label_id in enumerate(self.labels["label_id"])}
        return (
            judgments.filter(pl.col("doc_id").is_in(list(doc_ids)) & pl.col("failure").is_null())
            .with_columns(label_row=pl.col("label_id").replace_strict(label_rows, return_dtype=pl.Int64))
            .select("doc_id", "label_row", "log_odds")
        )

    def training_set(self, judgments: pl.DataFrame) -> tuple[dict[str, list], dict[str, Any]]:
        """Training rows from the judgments of the non-held-out documents, and their statistics."""
        teacher = teacher_scores(judgments.filter(~pl.col("doc_id").is_in(list(self.holdout))), self.config)
        columns, skipped = training_rows(teacher, self.document_text, self.label_text, self.config)
        stats = {"documents": teacher["doc_id"].n_unique(), "rows": len(columns["anchor"]), "skipped": dict(skipped)}
        if not columns["anchor"]:
            raise EztagError(f"no training rows: {stats}", field="[distil]")
        return columns, stats

    def mine(self, model_dir: Path, round_dir: Path) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
        """(candidates, document vectors, label vectors) of the student in `model_dir`."""
        encoder = load_encoder(dataclasses.replace(self.encode_config, model=str(model_dir)))
        label_texts = list(self.label_text.values())
        write_store(round_dir / "labels", label_texts, encoder, self.encode_config, "encode labels")
        label_store = EmbeddingStore(round_dir / "labels")
        index = build_index(self.index_config)
        index.build(label_store)
        doc_vectors = encoder.encode(list(self.document_text.values()))
        candidates = mine(self.mine_config, self.documents, self.labels, self.doc_rows, doc_vectors, index, label_store)
        return candidates, doc_vectors, label_store.load()

    def held_out_top(
        self, judgments: pl.DataFrame, encode_dir: Path, index_dir: Path
    ) -> tuple[pl.DataFrame, pl.DataFrame | None, dict[str, Any] | None]:
        """(`judgments` (the judge stage's) with every held-out document's top-5 of the encode stage's student,
        the pairs added and their judge report): a budget may leave some unjudged, and the label-free scores of all
        rounds must cover the same documents."""
        if self.mine_config.budget is None:
            return judgments, None, None
        rows = np.asarray(
            [row for doc_id, row in zip(self.doc_ids, self.doc_rows, strict=True) if doc_id in self.holdout]
        )
        vectors = gather_rows(EmbeddingStore(encode_dir / "documents"), rows)
        top = dataclasses.replace(self.mine_config, k=TOP_K, bm25_k=0)
        index, label_store = load_index(index_dir), EmbeddingStore(encode_dir / "labels")
        candidates = mine(top, self.documents, self.labels, rows, vectors, index, label_store)
        missing = candidates.join(judgments.select("doc_id", "label_id"), on=["doc_id", "label_id"], how="anti")
        if missing.is_empty():
            return judgments, None, None
        added, report = self.judge_pairs(missing)
        return pl.concat([judgments, added.select(judgments.columns)]), added, report

    def judge_pairs(self, candidates: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
        """Judge the candidates through the shared cache, within the mine budget; held-out documents only need the
        student's top-5, and always get it."""
        held_out = pl.col("doc_id").is_in(list(self.holdout))
        candidates = candidates.filter(~held_out | (pl.col("student_rank") <= TOP_K))
        candidates = within_budget(candidates, self.mine_config, always=self.holdout)
        if self.judge is None:
            self.judge = build_judge(self.judge_config)
        return judge_candidates(self.judge_config, self.judge, self.ingest_dir, candidates, self.cache_dir, self.engine)
