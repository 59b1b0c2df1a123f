"""What a finished run holds, read for its report: stages, metrics, per-label results, the judge's and the
calibrator's reliability, distillation rounds and sample documents (`read_run`). Reading takes no lock and writes
nothing into the run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from eztag.comparison import found_per_label, label_k
from eztag.errors import EztagError
from eztag.judging import P_YES

SAMPLE_DOCUMENTS = 12
SAMPLE_TAGS = 10
BEST_WORST = 10
TEXT_CHARS = 600
RELIABILITY_BINS = 10
GROUPS = ("head", "torso", "tail")


@dataclasses.dataclass
class RunReport:
    """Everything the page shows about one run; sections the run lacks are None."""

    name: str
    path: str
    stages: list[dict[str, Any]]
    metrics: dict[str, Any] | None
    labels: dict[str, Any] | None
    judge: dict[str, Any] | None
    distil: dict[str, Any] | None
    tagging: dict[str, Any] | None
    samples: list[dict[str, Any]]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EztagError(f"not readable JSON ({error})", file=path) from None


def _finished(manifest: dict[str, Any], stage: str, *names: str) -> bool:
    """True when the manifest records `stage` as finished and its files `names` are there."""
    return stage in manifest["stages"] and all((Path(manifest["root"]) / stage / name).is_file() for name in names)


def _stages(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished stages in pipeline order, with wall time, config hash and config."""
    from eztag.pipeline import STAGES

    order = list(STAGES)
    records = sorted(
        manifest["stages"].items(),
        key=lambda item: (order.index(item[0]) if item[0] in order else len(order), item[1].get("finished_at", "")),
    )
    return [
        {
            "name": name,
            "seconds": record.get("seconds"),
            "finished_at": record.get("finished_at", ""),
            "config_hash": record.get("config_hash", ""),
            "config": json.dumps(record.get("config", {}), indent=2, sort_keys=True, ensure_ascii=False),
        }
        for name, record in records
    ]


def _evaluated(ingest_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(ground truth pairs, labels with their text)."""
    gold = pl.read_parquet(ingest_dir / "ground_truth.parquet").unique()
    labels = pl.read_parquet(ingest_dir / "labels.parquet")
    return gold, labels


def frequency_groups(counts: pl.DataFrame) -> pl.DataFrame:
    """`counts` (label_id, support) with a `group` column: labels by falling support, head = the most frequent
    labels holding the first third of the gold pairs, torso the next third, tail the rest."""
    share = (pl.col("support").cum_sum() - pl.col("support")) / max(int(counts["support"].sum()), 1)
    return counts.sort(["support", "label_id"], descending=[True, False]).with_columns(
        group=pl.when(share < 1 / 3)
        .then(pl.lit("head"))
        .when(share < 2 / 3)
        .then(pl.lit("torso"))
        .otherwise(pl.lit("tail"))
    )


def label_results(run_dir: Path, ks: list[int]) -> dict[str, Any]:
    """Per-label recall at every k grouped head/torso/tail, the best and worst labels, and label coverage."""
    gold, labels = _evaluated(run_dir / "ingest")
    tags = pl.read_parquet(run_dir / "tag" / "tags.parquet", columns=["doc_id", "rank", "label_id"])
    tags = tags.filter(pl.col("doc_id").is_in(gold["doc_id"].unique().implode()))
    counts = frequency_groups(gold.group_by("label_id").agg(support=pl.len()))
    hits = tags.join(gold, on=["doc_id", "label_id"])
    groups: dict[str, dict[str, Any]] = {group: {"labels": 0, "pairs": 0, "recall": {}} for group in GROUPS}
    for group, frame in counts.group_by("group"):
        groups[group[0]].update(labels=frame.height, pairs=int(frame["support"].sum()))
    for k in ks:
        found = hits.filter(pl.col("rank") <= k).join(counts, on="label_id").group_by("group").agg(found=pl.len())
        found_by_group = dict(found.iter_rows())
        for name, values in groups.items():
            values["recall"][k] = found_by_group.get(name, 0) / values["pairs"] if values["pairs"] else None
    k = label_k(ks)
    top = tags.filter(pl.col("rank") <= k)
    per_label = (
        found_per_label(gold, tags, labels.select("label_id", "text"), k)
        .join(counts.select("label_id", "group"), on="label_id")
        .join(top.group_by("label_id").agg(predicted=pl.len()), on="label_id", how="left")
        .with_columns(pl.col("predicted").fill_null(0), recall=pl.col("found") / pl.col("support"))
    )
    min_support = 2 if per_label.filter(pl.col("support") >= 2).height >= 2 * BEST_WORST else 1
    ranked = per_label.filter(pl.col("support") >= min_support)
    order = ["recall", "support", "label_id"]
    best = ranked.sort(order, descending=[True, True, False]).head(BEST_WORST)
    rest = ranked.filter(~pl.col("label_id").is_in(best["label_id"].implode()))
    worst = rest.sort(order, descending=[False, True, False]).head(BEST_WORST)
    return {
        "k": k,
        "ks": ks,
        "groups": groups,
        "min_support": min_support,
        "best": best.to_dicts(),
        "worst": worst.to_dicts(),
        "labels_total": labels.height,
        "labels_gold": counts.height,
        "labels_predicted": top["label_id"].n_unique(),
        "labels_found": int(per_label.filter(pl.col("found") > 0).height),
        "labels_never_found": int(per_label.filter(pl.col("found") == 0).height),
    }


def _spearman(frame: pl.DataFrame) -> float | None:
    """Mean per-document Spearman correlation of student score and judge log-odds (documents with a spread)."""
    from scipy.stats import spearmanr

    values = [
        float(spearmanr(group["student_score"], group["log_odds"]).statistic)
        for _, group in frame.group_by("doc_id")
        if group.height > 1 and group["log_odds"].n_unique() > 1 and group["student_score"].n_unique() > 1
    ]
    return float(np.mean(values)) if values else None


def reliability(p_yes: np.ndarray, is_gold: np.ndarray) -> list[dict[str, Any]]:
    """P(yes) in equal-width bins against the share of pairs that are gold labels: the judge's reliability."""
    edges = np.linspace(0, 1, RELIABILITY_BINS + 1)
    which = np.clip(np.digitize(p_yes, edges[1:-1]), 0, RELIABILITY_BINS - 1)
    rows = []
    for b in range(RELIABILITY_BINS):
        inside = which == b
        if inside.any():
            rows.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "pairs": int(inside.sum()),
                    "mean_p_yes": float(p_yes[inside].mean()),
                    "gold_share": float(is_gold[inside].mean()),
                }
            )
    return rows


def _mean(series: pl.Series) -> float:
    """The mean of a numeric or boolean column (0 for an empty one)."""
    value = series.cast(pl.Float64).mean()
    return float(value) if isinstance(value, (int, float)) else 0.0


def judge_results(run_dir: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The judge's report, its agreement with the student, its reranking quality and reliability on gold labels."""
    if not _finished(manifest, "judge", "judgments.parquet"):
        return None
    judgments = pl.read_parquet(run_dir / "judge" / "judgments.parquet")
    scored = judgments.filter(pl.col("failure").is_null() & pl.col("log_odds").is_not_null())
    judge_top = scored.filter(pl.col("rank_in_doc") == 1)
    student_top = scored.sort("student_score", descending=True).group_by("doc_id", maintain_order=True).first()
    same_top = judge_top.join(student_top.select("doc_id", student_label="label_id"), on="doc_id")
    result: dict[str, Any] = {
        "report": _read_json(run_dir / "judge" / "report.json") or {},
        "pairs": judgments.height,
        "documents": scored["doc_id"].n_unique(),
        "spearman": _spearman(scored),
        "top1_agreement": _mean(same_top["label_id"] == same_top["student_label"]) if same_top.height else None,
        "log_odds": scored["log_odds"].to_numpy(),
        "gold": None,
        "calibration": calibration(run_dir),
    }
    gold = pl.read_parquet(run_dir / "ingest" / "ground_truth.parquet").unique()
    judged_with_gold = scored.filter(pl.col("doc_id").is_in(gold["doc_id"].unique().implode()))
    if judged_with_gold.height:
        marked = judged_with_gold.join(gold.with_columns(is_gold=pl.lit(True)), on=["doc_id", "label_id"], how="left")
        marked = marked.with_columns(pl.col("is_gold").fill_null(False))
        judge_first = marked.filter(pl.col("rank_in_doc") == 1)["is_gold"]
        student_first = marked.join(student_top.select("doc_id", "label_id"), on=["doc_id", "label_id"])["is_gold"]
        result["gold"] = {
            "documents": marked["doc_id"].n_unique(),
            "judge_p1": _mean(judge_first),
            "student_p1": _mean(student_first),
            "reliability": reliability(marked.select(P_YES)["p_yes"].to_numpy(), marked["is_gold"].to_numpy()),
        }
    return result


def _scalars(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The scalar entries of a nested report, keys joined with dots."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _scalars(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float, str, bool)):
            out[f"{prefix}{key}"] = value
    return out


def calibration(run_dir: Path) -> dict[str, Any] | None:
    """A `calibrate` stage's report when the run has one: its scalar entries and its reliability bins
    (`check.reliability`: pairs per bin, the calibrated probability and the observed rate it should match, which
    the stage defines: the mean of its targets on held-out documents)."""
    folder = run_dir / "calibrate"
    report = _read_json(folder / "report.json") if folder.is_dir() else None
    if not isinstance(report, dict):
        return None
    bins = report.get("check", {}).get("reliability") if isinstance(report.get("check"), dict) else None
    usable = isinstance(bins, list) and all(
        isinstance(row, dict) and {"probability", "observed", "count"} <= row.keys() for row in bins
    )
    return {"scalars": _scalars(report), "reliability": bins if usable and bins else None}


def distil_results(run_dir: Path, manifest: dict[str, Any], metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """Per-round table of a distilled run: label-free selection scores, agreement, cost; the kept round."""
    if not _finished(manifest, "distil", "report.json"):
        return None
    report = _read_json(run_dir / "distil" / "report.json")
    rounds = []
    for entry in report.get("rounds", []):
        label_free = entry.get("label_free", {})
        at_k = [key for key in label_free if key.startswith("llm_p@") and key != "llm_p@1"]
        rounds.append(
            {
                "round": entry["round"],
                "llm_p1": label_free.get("llm_p@1"),
                "llm_pk": label_free.get(at_k[0]) if at_k else None,
                "llm_k": at_k[0].removeprefix("llm_p@") if at_k else "k",
                "selection": (label_free["llm_p@1"] + label_free[at_k[0]]) / 2 if at_k else None,
                "spearman": entry.get("agreement", {}).get("spearman"),
                "top1": entry.get("agreement", {}).get("top1_agreement"),
                "judged_now": entry.get("judge", {}).get("judged_now"),
                "training_seconds": entry.get("training", {}).get("seconds"),
                "kept": entry["round"] == report.get("best_round"),
            }
        )
    test = None
    if metrics:
        test = {key: metrics["metrics"][key] for key in ("P@1", "P@5", "nDCG@5") if key in metrics["metrics"]}
    return {"rounds": rounds, "best_round": report.get("best_round"), "test": test, "summary": report}


def tagging_results(run_dir: Path) -> dict[str, Any]:
    """What the tag stage put on the documents: its report, the number of selected tags per document (a count per
    number of tags) and the scores (and calibrated probabilities) of the selected tags."""
    report = _read_json(run_dir / "tag" / "report.json")
    tags = pl.read_parquet(run_dir / "tag" / "tags.parquet")
    selected = tags.filter(pl.col("selected"))
    per_document = (
        pl.read_parquet(run_dir / "ingest" / "documents.parquet", columns=["doc_id"])
        .join(selected.group_by("doc_id").len(), on="doc_id", how="left")
        .select(pl.col("len").fill_null(0).alias("tags"))
        .group_by("tags")
        .len()
        .sort("tags")
    )
    return {
        "report": report,
        "tags_per_document": dict(per_document.iter_rows()),
        "scores": selected["score"].to_numpy(),
        "probabilities": selected["probability"].to_numpy() if "probability" in selected.columns else None,
    }


def sample_documents(run_dir: Path, k: int) -> list[dict[str, Any]]:
    """A fixed sample of documents (those with ground truth when there are some) with their top `k` tags (score,
    probability when calibrated, selected), and with ground truth their hits and misses."""
    documents = pl.read_parquet(run_dir / "ingest" / "documents.parquet")
    labels = pl.read_parquet(run_dir / "ingest" / "labels.parquet").select("label_id", "text")
    gold = pl.read_parquet(run_dir / "ingest" / "ground_truth.parquet").unique()
    pool = documents.filter(pl.col("doc_id").is_in(gold["doc_id"].unique().implode())) if gold.height else documents
    chosen = pool.sample(min(SAMPLE_DOCUMENTS, pool.height), seed=0).sort("doc_id") if pool.height else pool
    ranked = pl.read_parquet(run_dir / "tag" / "tags.parquet")
    if "probability" not in ranked.columns:
        ranked = ranked.with_columns(probability=pl.lit(None, pl.Float32))
    tags = ranked.filter(pl.col("doc_id").is_in(chosen["doc_id"].implode()) & (pl.col("rank") <= k))
    text_of = dict(labels.iter_rows())
    samples = []
    for doc_id, title, text in chosen.select("doc_id", "title", "text").iter_rows():
        wanted = set(gold.filter(pl.col("doc_id") == doc_id)["label_id"])
        predicted = tags.filter(pl.col("doc_id") == doc_id).sort("rank")
        found = set(predicted["label_id"])
        samples.append(
            {
                "doc_id": doc_id,
                "title": title,
                "text": text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + "…",
                "tags": [
                    {
                        "label_id": label_id,
                        "text": text_of.get(label_id, ""),
                        "score": score,
                        "probability": probability,
                        "selected": selected,
                        "hit": label_id in wanted,
                    }
                    for label_id, score, probability, selected in predicted.select(
                        "label_id", "score", "probability", "selected"
                    ).iter_rows()
                ],
                "missed": [
                    {"label_id": label_id, "text": text_of.get(label_id, "")} for label_id in sorted(wanted - found)
                ],
                "has_gold": bool(wanted),
            }
        )
    return samples


def read_run(run_dir: Path, name: str | None = None, *, details: bool = True) -> RunReport:
    """Gather a run directory's report; only reads files. Without `details`, only its stages and metrics (a run a
    comparison page tables but does not draw)."""
    run_dir = Path(run_dir)
    manifest_path, metrics_path = run_dir / "manifest.json", run_dir / "evaluate" / "metrics.json"
    if not manifest_path.is_file() and not metrics_path.is_file():
        raise EztagError("not a run directory (no manifest.json)", file=run_dir)
    manifest = _read_json(manifest_path) if manifest_path.is_file() else {"stages": {"evaluate": {}}}
    if not isinstance(manifest, dict) or not isinstance(manifest.get("stages"), dict):
        raise EztagError("corrupt manifest", file=manifest_path)
    manifest = {**manifest, "root": str(run_dir)}
    metrics = _read_json(metrics_path) if _finished(manifest, "evaluate", "metrics.json") else None
    tagged = (
        details and _finished(manifest, "tag", "tags.parquet") and _finished(manifest, "ingest", "documents.parquet")
    )
    labels = label_results(run_dir, metrics["ks"]) if metrics and tagged else None
    tag_k = label_k(metrics["ks"]) if metrics else SAMPLE_TAGS
    return RunReport(
        name=name or run_dir.resolve().name,
        path=str(run_dir.resolve()),
        stages=_stages(manifest),
        metrics=metrics,
        labels=labels,
        judge=judge_results(run_dir, manifest) if details else None,
        distil=distil_results(run_dir, manifest, metrics) if details else None,
        tagging=tagging_results(run_dir) if tagged else None,
        samples=sample_documents(run_dir, tag_k) if tagged else [],
    )
