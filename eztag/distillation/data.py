"""Training data: the teacher signal per judged pair and the (anchor, positive, negatives, scores) rows."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl

from eztag.distillation.config import DistilConfig


def teacher_scores(judgments: pl.DataFrame, config: DistilConfig) -> pl.DataFrame:
    """The scored judgments with a `teacher` column (see DistilConfig)."""
    scored = judgments.filter(pl.col("failure").is_null())
    if config.teacher != "combined":
        return scored.with_columns(teacher=pl.col(config.teacher))

    def z(column: str) -> pl.Expr:
        value = pl.col(column).cast(pl.Float64)
        return ((value - value.mean().over("doc_id")) / value.std().over("doc_id")).fill_nan(0.0).fill_null(0.0)

    weight = config.teacher_weight
    return scored.with_columns(teacher=weight * z("log_odds") + (1 - weight) * z("student_score"))


def training_rows(
    teacher: pl.DataFrame, document_text: dict[str, str], label_text: dict[str, str], config: DistilConfig
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
