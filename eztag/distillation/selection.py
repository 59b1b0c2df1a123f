"""Round selection without ground truth: the judge's verdict on the student's top labels of held-out documents."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

TOP_K = 5  # LLM-P@k is measured at 1 and at this k


def _mean(values: pl.Series) -> float:
    """The mean to 4 decimals, 0 for no values."""
    mean = values.mean()
    return round(float(mean), 4) if isinstance(mean, (int, float)) else 0.0


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
        "llm_p@1": _mean(per_doc["at_1"]),
        f"llm_p@{TOP_K}": _mean(per_doc["at_k"]),
        "mean_log_odds@1": _mean(per_doc["log_odds_at_1"]),
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


def rounds_markdown(history: list[dict], best: int, distinct_pairs: int) -> str:
    """The distil stage's rounds as a Markdown table: label-free scores, agreement with the judge, training documents,
    pairs judged and training time per round (round 0: the starting encoder), the kept round marked."""
    lines = [
        f"| round | LLM-P@1 | LLM-P@{TOP_K} | label-free score | Spearman with judge | training documents |"
        " pairs judged now | train s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for report in history:
        scores, spearman = report["label_free"], report["agreement"]["spearman"]
        training = report.get("training_set", {}).get("documents", "-")
        seconds = report.get("training", {}).get("seconds")
        lines.append(
            f"| {report['round']}{' (kept)' if report['round'] == best else ''} | {scores['llm_p@1']:.4f} | "
            f"{scores[f'llm_p@{TOP_K}']:.4f} | {selection_score(scores):.4f} | "
            f"{'-' if spearman is None else f'{spearman:.4f}'} | {training} | {report['judge']['judged_now']} | "
            f"{'-' if seconds is None else f'{seconds:.1f}'} |"
        )
    return "\n".join(lines) + (
        "\n\nLabel-free score: the mean of LLM-P@1 and LLM-P@5, the judge's verdicts on the student's top labels of the"
        " held-out documents; (kept): the round whose model distil/model holds. Pairs judged now: not found in the"
        " judge cache. Distinct (document, label) pairs over the judge stage, round 0's held-out top-up and every"
        f" round: {distinct_pairs:,} (what an empty judge cache would judge).\n"
    )
