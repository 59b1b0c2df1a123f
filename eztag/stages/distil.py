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
import math
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from eztag.artifacts import atomic_dir, write_json, write_parquet
from eztag.devices import check_device
from eztag.embeddings import EmbeddingStore, gather_rows
from eztag.errors import EztagError
from eztag.models import resolve_encoder
from eztag.stages import encode as encode_stage
from eztag.stages import index as index_stage
from eztag.stages import judge as judge_stage
from eztag.stages import mine as mine_stage
from eztag.stages.contract import StageInputs, no_fingerprint
from eztag.templates import render_rows

NAME = "distil"
HELP = "train the encoder on the judge's scores, in rounds"
REQUIRES = ("ingest", "encode", "index", "mine", "judge")
OPTIONAL: tuple[str, ...] = ()
CONFLICTS = {"synonyms": "distil re-encodes and re-indexes the labels without their synonym vectors"}
PATH_FIELDS: tuple[str, ...] = ()
fingerprint = no_fingerprint
TOP_K = 5  # LLM-P@k is measured at 1 and at this k
ENCODE_DIR, INDEX_DIR = "encode", "index"  # the kept student's encode and index outputs, inside distil's folder


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


def teacher_scores(judgments: pl.DataFrame, config: Config) -> pl.DataFrame:
    """The scored judgments with a `teacher` column (see Config)."""
    scored = judgments.filter(pl.col("failure").is_null())
    if config.teacher != "combined":
        return scored.with_columns(teacher=pl.col(config.teacher))

    def z(column: str) -> pl.Expr:
        value = pl.col(column).cast(pl.Float64)
        return ((value - value.mean().over("doc_id")) / value.std().over("doc_id")).fill_nan(0.0).fill_null(0.0)

    weight = config.teacher_weight
    return scored.with_columns(teacher=weight * z("log_odds") + (1 - weight) * z("student_score"))


def training_rows(
    teacher: pl.DataFrame, document_text: dict[str, str], label_text: dict[str, str], config: Config
) -> tuple[dict[str, list], Counter[str]]:
    """Dataset columns (anchor, positive, negative_1.., label = teacher scores of the list) and skip counts."""
    columns: dict[str, list] = {"anchor": [], "positive": []}
    columns.update({f"negative_{i}": [] for i in range(1, config.list_size)})
    columns["label"] = []
    skipped: Counter[str] = Counter()
    for (doc_id,), group in teacher.sort("teacher", descending=True).group_by("doc_id", maintain_order=True):
        if config.positives == "top":
            positive = np.arange(group.height) < config.top_m
        else:
            positive = group["teacher"].to_numpy() >= config.threshold
        positive &= np.cumsum(positive) <= config.max_positives
        if not positive.any():
            skipped["no_positive"] += 1
            continue
        negatives = group.filter(~pl.Series(positive)).sort("student_score", descending=True, nulls_last=True)
        negatives = negatives.head(config.list_size - 1)
        if negatives.height < config.list_size - 1:
            skipped["too_few_candidates"] += 1
            continue
        for label_id, score in group.filter(pl.Series(positive)).select("label_id", "teacher").iter_rows():
            columns["anchor"].append(document_text[doc_id])
            columns["positive"].append(label_text[label_id])
            for i, negative in enumerate(negatives["label_id"], start=1):
                columns[f"negative_{i}"].append(label_text[negative])
            columns["label"].append([score, *negatives["teacher"].to_list()])
    return columns, skipped


def build_loss(model: Any, config: Config) -> Any:
    """contrastive_weight * (cached) MNRL over in-batch and hard negatives + distillation_weight * KL or MarginMSE."""
    import torch
    from sentence_transformers.base.losses.merged_forward import embed_columns
    from sentence_transformers.sentence_transformer import losses

    directions = ("query_to_doc", "doc_to_query") if config.symmetric else ("query_to_doc",)
    if config.contrastive == "mnrl":
        contrastive = losses.MultipleNegativesRankingLoss(model, scale=1 / config.temperature, directions=directions)
    else:
        contrastive = losses.CachedMultipleNegativesRankingLoss(
            model, scale=1 / config.temperature, directions=directions, mini_batch_size=config.mini_batch_size
        )
    margin_mse = losses.MarginMSELoss(model)

    class DistilLoss(torch.nn.Module):
        """The weighted sum; the embeddings are computed once unless the cached MNRL needs its own passes."""

        def __init__(self) -> None:
            super().__init__()
            self.model, self.contrastive, self.margin_mse = model, contrastive, margin_mse

        def distillation(self, embeddings: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
            """Listwise KL(teacher || student) over each row's candidates, or MarginMSE on the same scale."""
            if config.distillation == "margin-mse":
                return self.margin_mse.compute_loss_from_embeddings(
                    embeddings, labels * config.temperature / config.teacher_temperature
                )
            candidates = torch.stack(embeddings[1:], dim=1)
            student = torch.einsum("bd,bnd->bn", embeddings[0], candidates) / config.temperature
            target = torch.softmax(labels / config.teacher_temperature, dim=1)
            return torch.nn.functional.kl_div(torch.log_softmax(student, dim=1), target, reduction="batchmean")

        def forward(self, sentence_features: list[dict[str, torch.Tensor]], labels: torch.Tensor) -> torch.Tensor:
            sentence_features = list(sentence_features)
            labels = labels.float()
            embeddings = None
            total = torch.zeros((), device=labels.device)
            if config.contrastive_weight and config.contrastive == "cached-mnrl":
                total = total + config.contrastive_weight * self.contrastive(sentence_features, labels)
            elif config.contrastive_weight:
                embeddings = embed_columns(self.model, sentence_features)
                total = total + config.contrastive_weight * self.contrastive.compute_loss_from_embeddings(
                    embeddings, labels
                )
            if config.distillation_weight:
                if embeddings is None:
                    embeddings = embed_columns(self.model, sentence_features)
                total = total + config.distillation_weight * self.distillation(embeddings, labels)
            return total

    return DistilLoss()


def train(base_model: str, columns: dict[str, list], config: Config, round_dir: Path) -> dict[str, Any]:
    """Train a copy of `base_model` into round_dir/model, resuming from the newest checkpoint in round_dir."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Arguments
    from transformers.trainer_utils import get_last_checkpoint

    from eztag.devices import pick_device, pick_dtype

    device = pick_device(config.device, field="distil.device")
    bf16 = pick_dtype(config.precision, device, gpu_auto="bfloat16") == torch.bfloat16  # mixed precision: bf16 or off
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = SentenceTransformer(resolve_encoder(base_model), device=str(device))
    checkpoints = round_dir / "checkpoints"
    arguments = Arguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the steps (transformers 5)
        bf16=bf16,
        use_cpu=device.type == "cpu",
        batch_sampler=config.batch_sampler,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        logging_steps=1,
        report_to="none",
        seed=config.seed,
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=arguments, train_dataset=Dataset.from_dict(columns), loss=build_loss(model, config)
    )
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - started
    with atomic_dir(round_dir / "model") as tmp:
        model.save(str(tmp))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "rows": len(columns["anchor"]),
        "steps": result.global_step,
        "resumed_from": Path(last).name if last else None,
        "losses": [round(float(value), 5) for value in losses],
        "train_loss": round(float(result.training_loss), 5),
        "seconds": round(seconds, 2),
    }


def label_free_scores(judgments: pl.DataFrame, holdout: set[str], verdict_threshold: float) -> dict[str, float]:
    """LLM-P@1 and LLM-P@5 on held-out documents: the share of the student's top-k the judge says yes to.

    "Yes" is P(positive) >= verdict_threshold, read from the log-odds (the same test as score >= threshold on the
    yes/no scale, and P(grade >= 2) >= threshold on the graded one, whose score is no probability).
    """
    verdict_log_odds = math.log(verdict_threshold / (1 - verdict_threshold))
    top = judgments.filter(
        pl.col("doc_id").is_in(list(holdout)) & pl.col("student_rank").is_not_null() & (pl.col("student_rank") <= TOP_K)
    ).with_columns(yes=(pl.col("log_odds") >= verdict_log_odds).fill_null(False).cast(pl.Float64))
    per_doc = top.group_by("doc_id").agg(
        at_1=pl.col("yes").filter(pl.col("student_rank") == 1).sum(),
        at_k=pl.col("yes").sum() / TOP_K,
        log_odds_at_1=pl.col("log_odds").filter(pl.col("student_rank") == 1).mean(),
    )
    return {
        "llm_p@1": round(float(per_doc["at_1"].mean() or 0), 4),
        f"llm_p@{TOP_K}": round(float(per_doc["at_k"].mean() or 0), 4),
        "mean_log_odds@1": round(float(per_doc["log_odds_at_1"].mean() or 0), 4),
        "documents": per_doc.height,
    }


def agreement(reference: pl.DataFrame, doc_row: dict[str, int], doc_vectors: np.ndarray, labels: np.ndarray) -> dict:
    """How far a student ranks the held-out documents' round-0 candidates as the judge does.

    `reference`: judged (doc_id, label_row, log_odds) rows; returns the mean per-document Spearman correlation
    of student and judge scores and the share of documents whose top candidate is the same for both.
    """
    from scipy.stats import spearmanr

    correlations, same_top = [], []
    for (doc_id,), group in reference.group_by("doc_id", maintain_order=True):
        student = labels[group["label_row"].to_numpy()] @ doc_vectors[doc_row[doc_id]]
        judge = group["log_odds"].to_numpy()
        same_top.append(float(np.argmax(student) == np.argmax(judge)))
        if group.height > 1 and np.ptp(judge) > 0:
            correlations.append(float(spearmanr(student, judge).statistic))
    return {
        "spearman": round(float(np.mean(correlations)), 4) if correlations else None,
        "top1_agreement": round(float(np.mean(same_top)), 4) if same_top else None,
    }


def selection_score(scores: dict[str, float]) -> float:
    """The label-free score the rounds are selected by: mean of LLM-P@1 and LLM-P@5."""
    return (scores["llm_p@1"] + scores[f"llm_p@{TOP_K}"]) / 2


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
        return judge_stage.judge_candidates(self.judge_config, self.judge, self.ingest_dir, candidates, self.cache_dir)


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

    if not (out_dir / "model").is_dir():
        with atomic_dir(out_dir / "model") as tmp:
            SentenceTransformer(history[best]["model"], device="cpu").save(str(tmp))
    encode_config = dataclasses.replace(state.encode_config, model=str(out_dir / "model"))
    dirs = {"ingest": inputs["ingest"], "encode": out_dir / ENCODE_DIR}
    configs = {"ingest": inputs.config("ingest"), "encode": encode_config}
    encode_stage.run(encode_config, dirs["encode"], StageInputs({"ingest": dirs["ingest"]}, configs))
    index_stage.run(state.index_config, out_dir / INDEX_DIR, StageInputs(dirs, configs))
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
