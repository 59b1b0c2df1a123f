"""`eztag check-judge`: is the judge a better teacher than the student, on a few of the user's labelled documents?

The check runs the pipeline's own ingest, encode, index, mine and judge settings over the labelled documents, in a
run directory of its own (`RUN_DIR-judge-check`), writing every judgment to the pipeline's judge cache (its
`cache_dir`, else the cache the pipeline's run directory will use), so the cold start judges none of them again.
Each document's candidates are then ordered by the student's score, by the judge's log-odds and, where `[distil]`
mixes the two (`teacher = "combined"`), by distil's teacher signal; each order is scored against the documents'
labels (P@1, nDCG@5 over all their labels) with a paired bootstrap interval of its difference from the student's
order (`eztag.comparison.paired_bootstrap`: the same documents resampled for both orders). The verdict reads the
nDCG@5 interval of the order distil trains towards: above zero, distilling should help; below zero, it should not
be done; across zero, the judge adds nothing this check can see.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.special import expit
from scipy.stats import mannwhitneyu

from eztag import judging, metrics
from eztag.artifacts import write_json, write_text
from eztag.calibration import expected_calibration_error
from eztag.comparison import Interval, paired_bootstrap
from eztag.config import apply_overrides, from_dict, load_toml
from eztag.distillation.config import DistilConfig
from eztag.distillation.data import teacher_scores
from eztag.errors import EztagError
from eztag.pipeline import Pipeline
from eztag.quickstart import DOCUMENT_COLUMNS, INGEST_DEFAULTS, detected_columns
from eztag.readers import detect_format

STAGES = ["ingest", "encode", "index", "mine", "judge"]
SUFFIX = "-judge-check"
METRICS = ("P@1", "nDCG@5")
VERDICT_METRIC = "nDCG@5"
REPORT = "judge-check"


def check_pipeline(
    pipeline: Path, labelled: Path, ground_truth: Path | None, documents: int, overrides: list[str]
) -> tuple[Pipeline, DistilConfig | None]:
    """The check's pipeline (`pipeline`'s ingest..judge over `documents` of `labelled`, with `overrides` but those
    of [distil]) and the distil settings that order the teacher's candidates (None without distil)."""
    tables, distil = _check_tables(pipeline, labelled, ground_truth, documents, overrides)
    return Pipeline.load(pipeline, [item for item in overrides if _section(item) != "distil"], data=tables), distil


def _check_tables(
    pipeline: Path, labelled: Path, ground_truth: Path | None, documents: int, overrides: list[str]
) -> tuple[dict[str, Any], DistilConfig | None]:
    """The tables of the check's pipeline (read as if from `pipeline`, so its relative paths stay its own) and
    the pipeline's distil settings (with `overrides`), or None without a `[distil]` table or stage."""
    raw = load_toml(pipeline)
    section = raw.get("pipeline", {})
    if not isinstance(section, dict) or ("judge" not in raw and "judge" not in section.get("stages", [])):
        raise EztagError("no [judge] table or judge stage: there is no judge to check", file=pipeline)
    name = str(section.get("name", "pipeline"))
    run_dir = section.get("run_dir")
    main_run_dir = (pipeline.parent / run_dir).resolve() if isinstance(run_dir, str) else Path(f"runs/{name}")
    judge = dict(raw.get("judge", {}))
    judge.setdefault("cache_dir", str((main_run_dir / "cache" / "judge").resolve()))  # where its judge stage looks
    check = {key: value for key, value in section.items() if key in ("engine", "ray")}
    check |= {"name": f"{name}{SUFFIX}", "stages": STAGES}
    if isinstance(run_dir, str):
        check["run_dir"] = f"{run_dir}{SUFFIX}"
    tables = {
        "pipeline": check,
        "ingest": _labelled_ingest(dict(raw.get("ingest", {})), labelled, ground_truth),
        "encode": raw.get("encode", {}),
        "index": raw.get("index", {}),
        # every labelled document's candidates: a judging budget is the cold start's, not the check's
        "mine": {**raw.get("mine", {}), "documents_limit": documents, "sample": "random", "budget": None},
        "judge": judge,
    }
    distil = apply_overrides({"distil": dict(raw.get("distil", {}))}, [o for o in overrides if _section(o) == "distil"])
    has_distil = "distil" in raw or "distil" in section.get("stages", [])
    config = from_dict(DistilConfig, distil["distil"], section="distil", file=pipeline) if has_distil else None
    return tables, config


def _section(override: str) -> str:
    return override.partition("=")[0].partition(".")[0].strip()


def _labelled_ingest(ingest: dict[str, Any], labelled: Path, ground_truth: Path | None) -> dict[str, Any]:
    """The pipeline's [ingest] over the labelled documents: its label settings, and for each document column the
    pipeline's name where the labelled file has it, else the one found in the file (as `eztag tag` finds it)."""
    table = {key: value for key, value in ingest.items() if key not in ("documents", "ground_truth")}
    table["documents"] = str(labelled.resolve())
    if ground_truth is not None:
        table["ground_truth"] = str(ground_truth.resolve())
    if not labelled.is_file() or "xc" in (table.get("format"), detect_format(labelled)):
        return table  # a missing file is named by ingest; XC files have fixed columns
    table["format"] = "auto"
    found = detected_columns(labelled, detect_format(labelled), DOCUMENT_COLUMNS, keep=table)
    for field in DOCUMENT_COLUMNS:
        table.pop(field, None)
        if found[field] is not None and found[field] != INGEST_DEFAULTS[field]:
            table[field] = found[field]
    if ground_truth is not None:
        table.pop("doc_labels", None)  # the labels come from the ground-truth file
    elif found["doc_labels"] is None:
        names = ", ".join(DOCUMENT_COLUMNS["doc_labels"])
        raise EztagError(f"no labels column (looked for {names}); add one or give --ground-truth FILE", file=labelled)
    return table


def orderings(judgments: pl.DataFrame, distil: DistilConfig | None) -> dict[str, str]:
    """Order name -> the judgments column it sorts each document's candidates by (descending)."""
    names = {"student": "student_score", "judge": "log_odds"}
    if distil is not None and distil.teacher != "log_odds":
        weight = f" w={distil.teacher_weight}" if distil.teacher == "combined" else ""
        names[f"teacher ({distil.teacher}{weight})"] = "teacher"
    return names


def check(run_dir: Path, distil: DistilConfig | None, resamples: int, confidence: float) -> dict[str, Any]:
    """The check's figures from a finished run: each order's metrics and interval against the student's, the
    judge's yes-rates and the verdict."""
    judgments = pl.read_parquet(run_dir / "judge" / "judgments.parquet")
    gold = pl.read_parquet(run_dir / "ingest" / "ground_truth.parquet")
    scored = (
        teacher_scores(judgments, distil or DistilConfig())
        .join(gold.unique().with_columns(gold=pl.lit(True)), on=["doc_id", "label_id"], how="left")
        .with_columns(pl.col("gold").fill_null(False))
    )
    gold_counts = dict(gold.group_by("doc_id").len().iter_rows())
    doc_ids = sorted(set(scored["doc_id"]) & set(gold_counts))
    if not doc_ids:
        raise EztagError("no judged document has a label: check the labels column or --ground-truth", file=run_dir)
    n_gold = np.array([gold_counts[doc_id] for doc_id in doc_ids], dtype=np.float64)
    per_order = {
        name: _per_document(scored, doc_ids, n_gold, column) for name, column in orderings(judgments, distil).items()
    }
    student = per_order["student"]
    rows = []
    for name, values in per_order.items():
        row: dict[str, Any] = {"order": name, **{metric: float(values[i].mean()) for i, metric in enumerate(METRICS)}}
        if name != "student":
            observed, low, high = paired_bootstrap(student, values, len(METRICS), resamples, confidence)
            row["vs_student"] = {
                metric: [float(observed[i]), float(low[i]), float(high[i])] for i, metric in enumerate(METRICS)
            }
        rows.append(row)
    says_yes = scored.with_columns(yes=pl.col("log_odds") >= 0)  # P(yes) >= 0.5 (P(grade >= 2) when graded)
    yes_rate = float(says_yes["yes"].to_numpy().mean())
    labelled = says_yes.filter(pl.col("doc_id").is_in(doc_ids))
    gold_flags = labelled["gold"].to_numpy()
    judged = json.loads((run_dir / "judge" / "report.json").read_text(encoding="utf-8"))
    return {
        "documents": len(doc_ids),
        "unlabelled_documents": scored["doc_id"].n_unique() - len(doc_ids),
        "pairs": judgments.height,
        "judged_now": judged["judged_now"],
        "pairs_per_second": judged.get("pairs_per_second"),  # of the pairs judged now; None when all were cached
        "failures": judgments.height - scored.height,
        "gold_among_candidates": round(float(labelled["gold"].to_numpy().sum() / n_gold.sum()), 4),
        "yes_rate": round(yes_rate, 4),
        "yes_rate_gold": _rate(labelled.filter(pl.col("gold"))["yes"]),
        "yes_rate_other": _rate(labelled.filter(~pl.col("gold"))["yes"]),
        # P(yes) = sigmoid(log-odds) against the labels: how true the judge's probability is, and how well the
        # judge's and the student's scores rank the labelled pairs' gold labels first (ROC AUC)
        "judge_ece": round(expected_calibration_error(expit(labelled["log_odds"].to_numpy()), gold_flags), 4),
        "auc_judge": _auc(labelled["log_odds"].to_numpy(), gold_flags),
        "auc_student": _auc(labelled["student_score"].to_numpy(), gold_flags),
        "confidence": confidence,
        "resamples": resamples,
        "orders": rows,
        "verdict": verdict(rows[-1], confidence),
        "yes_rate_warning": judging.yes_rate_warning(yes_rate, scored.height),
    }


def write_check(run_dir: Path, distil: DistilConfig | None, resamples: int, confidence: float) -> dict[str, Any]:
    """The check of a finished run, written beside it as judge-check.json and judge-check.md."""
    result = check(run_dir, distil, resamples, confidence)
    write_json(run_dir / f"{REPORT}.json", result)
    write_text(run_dir / f"{REPORT}.md", markdown(result))
    return result


def _auc(scores: np.ndarray, gold: np.ndarray) -> float | None:
    """ROC AUC of `scores` for the gold pairs (the Mann-Whitney U over both classes); None without both."""
    positives, negatives = scores[gold], scores[~gold]
    if not len(positives) or not len(negatives):
        return None
    return round(float(mannwhitneyu(positives, negatives).statistic) / (len(positives) * len(negatives)), 4)


def _rate(values: pl.Series) -> float | None:
    return round(float(values.mean()), 4) if values.len() else None  # type: ignore[arg-type]


def _per_document(scored: pl.DataFrame, doc_ids: list[str], n_gold: np.ndarray, column: str) -> np.ndarray:
    """[metric, document] of the candidates ordered by `column` (descending; ties by the student's rank)."""
    ordered = scored.sort(["doc_id", column, "student_rank"], descending=[False, True, False], nulls_last=True)
    hits_by_doc = dict(ordered.group_by("doc_id", maintain_order=True).agg(pl.col("gold")).iter_rows())
    depth = max(5, max(len(hits) for hits in hits_by_doc.values()))
    hits = np.zeros((len(doc_ids), depth))
    for row, doc_id in enumerate(doc_ids):
        found = hits_by_doc[doc_id]
        hits[row, : len(found)] = found
    at_1, at_5 = metrics.per_document(hits, n_gold, 1), metrics.per_document(hits, n_gold, 5)
    return np.stack([at_1["P@1"], at_5["nDCG@5"]])


def verdict(row: dict[str, Any], confidence: float) -> str:
    """The plain answer from the nDCG@5 interval of the order distil trains towards."""
    difference, low, high = row["vs_student"][VERDICT_METRIC]
    figure = f"{difference:+.4f} nDCG@5 [{low:+.4f}, {high:+.4f}] ({confidence:.0%} interval)"
    who = "the judge" if row["order"] == "judge" else f"the {row['order']}"
    if low > 0:
        return f"{who} out-ranks the student by {figure}; distilling should help"
    if high < 0:
        return f"it does not: {who} ranks below the student by {figure}; do not distil with it"
    return f"no clear difference: {who} vs the student {figure}; distilling is unlikely to help, judge more documents"


def markdown(result: dict[str, Any]) -> str:
    """The check as Markdown: a table of the orders, the yes-rates and the verdict."""
    level = f"{result['confidence']:.0%}"
    lines = [
        f"| order | P@1 | P@1 vs student [{level}] | nDCG@5 | nDCG@5 vs student [{level}] |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in result["orders"]:
        cells = [row["order"]]
        for metric in METRICS:
            cells.append(f"{row[metric]:.4f}")
            if "vs_student" in row:
                cells.append(Interval(*row["vs_student"][metric]).text)
            else:
                cells.append("-")
        lines.append("| " + " | ".join(cells) + " |")

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    lines += [
        "",
        f"{result['documents']} labelled documents, {result['pairs']} pairs ({result['failures']} failed); "
        f"{percent(result['gold_among_candidates'])} of their labels are among the candidates.",
        f"The judge says yes to {percent(result['yes_rate'])} of the pairs: {percent(result['yes_rate_gold'])} of "
        f"the labelled ones, {percent(result['yes_rate_other'])} of the others; P(yes) against the labels: ECE "
        f"{result['judge_ece']:.4f}; ROC AUC of the labelled pairs: judge {result['auc_judge']}, student "
        f"{result['auc_student']}.",
    ]
    if result["unlabelled_documents"]:
        lines.append(f"{result['unlabelled_documents']} judged documents had no label and are not counted.")
    if result["yes_rate_warning"]:
        lines.append(f"Warning: {result['yes_rate_warning']}.")
    lines += ["", f"Verdict: {result['verdict']}."]
    return "\n".join(lines) + "\n"


def write_sweep_checks(out: Path, results: dict[str, dict[str, Any]]) -> str:
    """A sweep's checks written to `out` as checks.json (one row per variant, in order) and checks.md; returns the
    Markdown."""
    text = sweep_markdown(results)
    write_json(out / "checks.json", [{"variant": name, **result} for name, result in results.items()])
    write_text(out / "checks.md", text)
    return text


def sweep_markdown(results: dict[str, dict[str, Any]]) -> str:
    """A sweep of checks as Markdown: per variant, the order distil trains towards against the student, and the
    variant with the largest nDCG@5 gain."""
    level = f"{next(iter(results.values()))['confidence']:.0%}"
    header = ["variant", "order", "documents", "pairs", "judged pairs/s", "yes-rate"]
    for metric in METRICS:
        header += [f"student {metric}", metric, f"{metric} vs student [{level}]"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for name, result in results.items():
        student, teacher = result["orders"][0], result["orders"][-1]
        speed = "cached" if result["pairs_per_second"] is None else f"{result['pairs_per_second']:.2f}"
        cells = [name, teacher["order"], str(result["documents"]), str(result["pairs"]), speed]
        cells.append(f"{result['yes_rate']:.0%}")
        for metric in METRICS:
            cells += [f"{student[metric]:.4f}", f"{teacher[metric]:.4f}", Interval(*teacher["vs_student"][metric]).text]
        lines.append("| " + " | ".join(cells) + " |")
    best = max(results, key=lambda name: results[name]["orders"][-1]["vs_student"][VERDICT_METRIC][0])
    teacher = results[best]["orders"][-1]
    gain = Interval(*teacher["vs_student"][VERDICT_METRIC]).text
    lines += [
        "",
        f"Largest {VERDICT_METRIC} gain over the student: `{best}` ({teacher['order']}): {gain}. Each variant's own "
        f"check: RUN_DIR/VARIANT/{REPORT}.md.",
    ]
    return "\n".join(lines) + "\n"
