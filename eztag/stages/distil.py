"""Distil: train the bi-encoder on the judge's scores in rounds, each stopped or kept by a label-free score.

Round r trains the student of round r-1 (round 0: the encode stage's model) on the judged candidates of the
training documents, re-mines their candidates with the new student (the mine stage's `mine`), and judges the
pairs the shared judge cache does not hold yet (the judge stage's `judge_candidates`). A held-out part of the
mined documents is never trained on: the judge's verdict on each student's top-1 and top-5 labels there
(LLM-P@1, LLM-P@5) is the label-free score; the rounds stop when it no longer improves, and the best round's
model is kept. No ground truth is read. The kept model then encodes the labels and documents into `encode/`
and is indexed into `index/`, which the tag stage uses when `distil` is in the pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from eztag.artifacts import atomic_dir, write_json, write_parquet
from eztag.devices import check_device
from eztag.distillation.data import teacher_scores, training_rows
from eztag.distillation.selection import TOP_K, agreement, label_free_scores, selection_score
from eztag.distillation.training import train
from eztag.embeddings import EmbeddingStore, gather_rows
from eztag.errors import EztagError
from eztag.models import resolve_encoder
from eztag.stages import encode as encode_stage
from eztag.stages import index as index_stage
from eztag.stages import judge as judge_stage
from eztag.stages import mine as mine_stage
from eztag.stages.contract import StageInputs, no_fingerprint, no_pipeline_checks
from eztag.templates import render_rows

NAME = "distil"
HELP = "train the encoder on the judge's scores, in rounds"
REQUIRES = ("ingest", "encode", "index", "mine", "judge")
OPTIONAL: tuple[str, ...] = ()
CONFLICTS = {"synonyms": "distil re-encodes and re-indexes the labels without their synonym vectors"}
PATH_FIELDS: tuple[str, ...] = ()
check_pipeline = no_pipeline_checks
fingerprint = no_fingerprint
ENCODE_DIR, INDEX_DIR = "encode", "index"  # the kept student's encode and index outputs, inside distil's folder
MODEL_DIR = "model"  # the kept student (a sentence-transformers folder), inside distil's folder


@dataclasses.dataclass
class Config:
    """Teacher signal, training rows, losses, training schedule and rounds.

    teacher: "log_odds", "score" (the judge's score: P(yes), or expected grade / 3), or "combined" =
    teacher_weight * z(log-odds) + (1 - teacher_weight) * z(student retrieval score), z-normalised over each
    document's candidates. Positives: the `top_m` best by the teacher ("top") or those with teacher >= `threshold`
    ("threshold"), at most `max_positives`; each positive makes one row with the document's `list_size - 1`
    non-positive candidates the student ranks highest (hard negatives). `temperature` divides the student's cosine
    similarities (MNRL scale, KL); `teacher_temperature` divides the teacher scores in the KL.
    """

    rounds: int = 2
    holdout: float = 0.2
    seed: int = 0
    min_improvement: float = 0.0
    verdict_threshold: float = 0.5
    teacher: Literal["log_odds", "score", "combined"] = "combined"
    teacher_weight: float = 0.5
    positives: Literal["top", "threshold"] = "top"
    top_m: int = 1
    threshold: float = 0.0
    max_positives: int = 3
    list_size: int = 8
    contrastive: Literal["mnrl", "cached-mnrl"] = "mnrl"
    contrastive_weight: float = 1.0
    distillation: Literal["kl", "margin-mse"] = "kl"
    distillation_weight: float = 1.0
    symmetric: bool = False
    temperature: float = 0.05
    teacher_temperature: float = 1.0
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 16
    mini_batch_size: int = 16
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    batch_sampler: Literal["no_duplicates", "batch_sampler"] = "no_duplicates"
    save_steps: int = 50
    device: str = "auto"
    precision: Literal["auto", "float32", "bfloat16"] = "auto"

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.top_m < 1 or self.max_positives < 1 or self.list_size < 3:
            raise ValueError("need rounds >= 1, top_m >= 1, max_positives >= 1 and list_size >= 3")
        if not 0 < self.holdout < 1 or not 0 <= self.teacher_weight <= 1 or not 0 < self.verdict_threshold < 1:
            raise ValueError("need 0 < holdout < 1, 0 <= teacher_weight <= 1 and 0 < verdict_threshold < 1")
        if min(self.contrastive_weight, self.distillation_weight) < 0 or not (
            self.contrastive_weight or self.distillation_weight
        ):
            raise ValueError("loss weights must be >= 0 and not both 0")
        if min(self.temperature, self.teacher_temperature, self.learning_rate, self.batch_size) <= 0:
            raise ValueError("temperatures, learning_rate and batch_size must be positive")
        check_device(self.device, field="distil.device")


class Rounds:
    """The state shared by every round: the documents, the recorded upstream configs, the judge and its cache."""

    def __init__(self, config: Config, inputs: StageInputs) -> None:
        ingest_dir, judge_dir = inputs["ingest"], inputs["judge"]
        self.config = config
        self.ingest_dir = ingest_dir
        self.encode_config: encode_stage.Config = inputs.config("encode")
        self.index_config: index_stage.Config = inputs.config("index")
        self.mine_config: mine_stage.Config = inputs.config("mine")
        self.judge_config: judge_stage.Config = inputs.config("judge")
        if self.mine_config.k < TOP_K:
            raise EztagError(f"distil needs mine.k >= {TOP_K} for LLM-P@{TOP_K}", field="[mine]")
        self.cache_dir = judge_stage.judge_cache(self.judge_config, judge_dir)
        self.engine = inputs.engine
        self.documents = pl.read_parquet(ingest_dir / "documents.parquet")
        self.labels = pl.read_parquet(ingest_dir / "labels.parquet")
        self.doc_rows = mine_stage.pick_documents(self.documents.height, self.mine_config)
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
        self.judge: judge_stage.Judge | None = None

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
        encoder = encode_stage.load_encoder(dataclasses.replace(self.encode_config, model=str(model_dir)))
        label_texts = list(self.label_text.values())
        encode_stage.write_store(round_dir / "labels", label_texts, encoder, self.encode_config, "encode labels")
        label_store = EmbeddingStore(round_dir / "labels")
        index = index_stage.build_index(self.index_config)
        index.build(label_store)
        doc_vectors = encoder.encode(list(self.document_text.values()))
        candidates = mine_stage.mine(
            self.mine_config, self.documents, self.labels, self.doc_rows, doc_vectors, index, label_store
        )
        return candidates, doc_vectors, label_store.load()

    def judge_pairs(self, candidates: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
        """Judge the candidates through the shared cache; held-out documents only need the student's top-5."""
        held_out = pl.col("doc_id").is_in(list(self.holdout))
        candidates = candidates.filter(~held_out | (pl.col("student_rank") <= TOP_K))
        if self.judge is None:
            self.judge = judge_stage.build_judge(self.judge_config)
        return judge_stage.judge_candidates(
            self.judge_config, self.judge, self.ingest_dir, candidates, self.cache_dir, self.engine
        )


def run(config: Config, out_dir: Path, inputs: StageInputs) -> dict[str, Any]:
    """Train round by round into rounds/round-N/, keep the best in model/, then write encode/ and index/."""
    encode_dir, judge_dir = inputs["encode"], inputs["judge"]
    state = Rounds(config, inputs)
    judgments = pl.read_parquet(judge_dir / "judgments.parquet")
    reference = state.reference(judgments, state.holdout)
    base_vectors = gather_rows(EmbeddingStore(encode_dir / "documents"), state.doc_rows)
    base_labels = EmbeddingStore(encode_dir / "labels").load()
    base = resolve_encoder(state.encode_config.model)
    history = [
        {
            "round": 0,
            "model": base,
            "label_free": label_free_scores(judgments, state.holdout, config.verdict_threshold),
            "agreement": agreement(reference, state.doc_row, base_vectors, base_labels),
            "judge": json.loads((judge_dir / "report.json").read_text()),
        }
    ]
    best = 0
    for number in range(1, config.rounds + 1):
        round_dir = out_dir / "rounds" / f"round-{number}"
        report_path = round_dir / "report.json"
        if report_path.exists():
            report = json.loads(report_path.read_text())
            judgments = pl.read_parquet(round_dir / "judgments.parquet")
        else:
            columns, data = state.training_set(judgments)
            report = {"round": number, "model": str(round_dir / "model"), "training_set": data}
            report["training"] = train(history[-1]["model"], columns, config, round_dir)
            candidates, doc_vectors, label_vectors = state.mine(round_dir / "model", round_dir)
            judgments, report["judge"] = state.judge_pairs(candidates)
            write_parquet(round_dir / "judgments.parquet", judgments)
            report["label_free"] = label_free_scores(judgments, state.holdout, config.verdict_threshold)
            report["agreement"] = agreement(reference, state.doc_row, doc_vectors, label_vectors)
            write_json(report_path, report)
            shutil.rmtree(round_dir / "checkpoints", ignore_errors=True)
        history.append(report)
        improvement = selection_score(report["label_free"]) - selection_score(history[best]["label_free"])
        print(f"[distil] round {number}: {report['label_free']}, agreement {report['agreement']}")
        if improvement <= config.min_improvement:
            break
        best = number
    return _finish(state, history, best, out_dir, inputs)


def _finish(state: Rounds, history: list[dict], best: int, out_dir: Path, inputs: StageInputs) -> dict[str, Any]:
    """Save the kept model, encode and index with it, and write report.json."""
    from sentence_transformers import SentenceTransformer

    if not (out_dir / MODEL_DIR).is_dir():
        with atomic_dir(out_dir / MODEL_DIR) as tmp:
            SentenceTransformer(history[best]["model"], device="cpu").save(str(tmp))
    encode_config = dataclasses.replace(state.encode_config, model=str(out_dir / MODEL_DIR))
    dirs = {"ingest": inputs["ingest"], "encode": out_dir / ENCODE_DIR}
    configs = {"ingest": inputs.config("ingest"), "encode": encode_config}
    encode_stage.run(encode_config, dirs["encode"], StageInputs({"ingest": dirs["ingest"]}, configs, inputs.engine))
    index_stage.run(state.index_config, out_dir / INDEX_DIR, StageInputs(dirs, configs, inputs.engine))
    rounds = history[1:]
    summary = {
        "best_round": best,
        "rounds_run": len(rounds),
        "label_free": {str(report["round"]): report["label_free"] for report in history},
        "agreement": {str(report["round"]): report["agreement"] for report in history},
        "pairs_judged": history[0]["judge"]["judged_now"] + sum(report["judge"]["judged_now"] for report in rounds),
        "judge_seconds": round(
            history[0]["judge"]["scoring_seconds"] + sum(report["judge"]["scoring_seconds"] for report in rounds), 2
        ),
        "training_seconds": round(sum(report["training"]["seconds"] for report in rounds), 2),
        "holdout_documents": len(state.holdout),
        "training_documents": len(state.doc_ids) - len(state.holdout),
        "rounds": history,
    }
    write_json(out_dir / "report.json", summary)
    return {key: value for key, value in summary.items() if key != "rounds"}
