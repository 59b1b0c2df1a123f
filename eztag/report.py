"""Run reports: one self-contained HTML page per run (or several runs side by side), read from the run directory.

The page needs no network when opened: plots are SVG embedded as data URIs, styles are inline, there is no
script, and a Content-Security-Policy forbids loading anything else. Every text from the data is escaped by
Jinja2's autoescaping. Reading a run takes no lock and writes nothing into it.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from eztag import __version__
from eztag.artifacts import write_text
from eztag.comparison import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, Comparison
from eztag.errors import EztagError
from eztag.judging import P_YES
from eztag.stages import evaluate

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


def label_k(ks: list[int]) -> int:
    """The cut-off per-label results are shown at: 10 when evaluated, else the largest k below it, else the least."""
    below = [k for k in ks if k <= 10]
    return max(below) if below else min(ks)


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
        counts.join(
            hits.filter(pl.col("rank") <= k).group_by("label_id").agg(found=pl.len()), on="label_id", how="left"
        )
        .join(top.group_by("label_id").agg(predicted=pl.len()), on="label_id", how="left")
        .join(labels.select("label_id", "text"), on="label_id", how="left")
        .with_columns(pl.col("found", "predicted").fill_null(0))
        .with_columns(recall=pl.col("found") / pl.col("support"))
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
    the stage defines; today the judge's mean P(yes) on held-out documents)."""
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


def sample_documents(run_dir: Path, k: int) -> list[dict[str, Any]]:
    """A fixed sample of documents (with ground truth when there is some) with their top tags, hits and misses."""
    documents = pl.read_parquet(run_dir / "ingest" / "documents.parquet")
    labels = pl.read_parquet(run_dir / "ingest" / "labels.parquet").select("label_id", "text")
    gold = pl.read_parquet(run_dir / "ingest" / "ground_truth.parquet").unique()
    pool = documents.filter(pl.col("doc_id").is_in(gold["doc_id"].unique().implode())) if gold.height else documents
    chosen = pool.sample(min(SAMPLE_DOCUMENTS, pool.height), seed=0).sort("doc_id") if pool.height else pool
    tags = pl.read_parquet(run_dir / "tag" / "tags.parquet").filter(
        pl.col("doc_id").is_in(chosen["doc_id"].implode()) & (pl.col("rank") <= k)
    )
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
                    {"label_id": label_id, "text": text_of.get(label_id, ""), "score": score, "hit": label_id in wanted}
                    for label_id, score in predicted.select("label_id", "score").iter_rows()
                ],
                "missed": [
                    {"label_id": label_id, "text": text_of.get(label_id, "")} for label_id in sorted(wanted - found)
                ],
                "has_gold": bool(wanted),
            }
        )
    return samples


def read_run(run_dir: Path, name: str | None = None) -> RunReport:
    """Gather a run directory's report; only reads files."""
    run_dir = Path(run_dir)
    manifest_path, metrics_path = run_dir / "manifest.json", run_dir / "evaluate" / "metrics.json"
    if not manifest_path.is_file() and not metrics_path.is_file():
        raise EztagError("not a run directory (no manifest.json)", file=run_dir)
    manifest = _read_json(manifest_path) if manifest_path.is_file() else {"stages": {"evaluate": {}}}
    if not isinstance(manifest, dict) or not isinstance(manifest.get("stages"), dict):
        raise EztagError("corrupt manifest", file=manifest_path)
    manifest = {**manifest, "root": str(run_dir)}
    metrics = _read_json(metrics_path) if _finished(manifest, "evaluate", "metrics.json") else None
    tagged = _finished(manifest, "tag", "tags.parquet") and _finished(manifest, "ingest", "documents.parquet")
    labels = label_results(run_dir, metrics["ks"]) if metrics and tagged else None
    tag_k = label_k(metrics["ks"]) if metrics else SAMPLE_TAGS
    return RunReport(
        name=name or run_dir.resolve().name,
        path=str(run_dir.resolve()),
        stages=_stages(manifest),
        metrics=metrics,
        labels=labels,
        judge=judge_results(run_dir, manifest),
        distil=distil_results(run_dir, manifest, metrics),
        samples=sample_documents(run_dir, tag_k) if tagged else [],
    )


def _svg(figure: Any) -> str:
    """A matplotlib figure as an SVG data URI (deterministic bytes, no external fonts)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float = 5.2, height: float = 3.4) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "eztag"
    matplotlib.rcParams["svg.fonttype"] = "path"
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    axes = figure.subplots()
    axes.grid(True, alpha=0.3)
    return figure, axes


def plot_metrics_at_k(runs: list[RunReport]) -> str:
    """P@k, R@k and nDCG@k against k for every evaluated run."""
    figure, axes = _figure(6.4, 3.6)
    styles = {"P": "-", "R": "--", "nDCG": ":"}
    for index, (run, metrics) in enumerate((r, r.metrics) for r in runs if r.metrics is not None):
        ks = metrics["ks"]
        for metric, style in styles.items():
            values = [metrics["metrics"][f"{metric}@{k}"] for k in ks]
            axes.plot(ks, values, style, marker="o", color=f"C{index}", label=f"{metric}@k · {run.name}")
    axes.set_xscale("log")
    ks = sorted({k for run in runs if run.metrics for k in run.metrics["ks"]})
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.minorticks_off()
    axes.set_xlabel("k")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _svg(figure)


def plot_recall_curve(runs: list[RunReport]) -> str:
    """recall@k for k = 1 … the tag stage's k."""
    figure, axes = _figure()
    for index, (run, metrics) in enumerate((r, r.metrics) for r in runs if r.metrics is not None):
        curve = metrics["recall_curve"]
        axes.plot(np.arange(1, len(curve) + 1), curve, color=f"C{index}", label=run.name)
    axes.set_xscale("log")
    axes.set_xlabel("k")
    axes.set_ylabel("recall@k")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=8)
    return _svg(figure)


def plot_groups(runs: list[RunReport]) -> str:
    """recall@k of head, torso and tail labels, one bar per run."""
    figure, axes = _figure()
    shown = [(run, run.labels) for run in runs if run.labels is not None]
    width = 0.8 / max(len(shown), 1)
    for index, (run, labels) in enumerate(shown):
        k = labels["k"]
        values = [labels["groups"][group]["recall"][k] or 0 for group in GROUPS]
        axes.bar(np.arange(3) + index * width, values, width, color=f"C{index}", label=f"{run.name} (R@{k})")
    axes.set_xticks(np.arange(3) + width * (len(shown) - 1) / 2, GROUPS)
    axes.set_ylabel("recall@k of the group's gold pairs")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=8)
    return _svg(figure)


def plot_log_odds(values: np.ndarray) -> str:
    """Histogram of the judge's log-odds."""
    figure, axes = _figure()
    axes.hist(values, bins=40, color="C0")
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel("log P(yes) - log P(no)")
    axes.set_ylabel("pairs")
    return _svg(figure)


def _reliability_figure(xlabel: str, ylabel: str) -> tuple[Any, Any]:
    """A unit square with the diagonal of perfect calibration."""
    figure, axes = _figure(4.2, 3.6)
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="perfect calibration")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    return figure, axes


def plot_reliability(rows: list[dict[str, Any]]) -> str:
    """The judge's reliability: mean P(yes) per bin against the share of gold labels in it."""
    figure, axes = _reliability_figure("mean P(yes) in bin", "share of pairs that are gold labels")
    axes.plot([row["mean_p_yes"] for row in rows], [row["gold_share"] for row in rows], marker="o", label="judge")
    axes.legend(fontsize=8)
    return _svg(figure)


def plot_calibration(rows: list[dict[str, Any]]) -> str:
    """The calibrate stage's reliability on its check split: calibrated probability against the observed rate
    (the judge's mean P(yes))."""
    figure, axes = _reliability_figure("calibrated probability", "observed (judge's mean P(yes))")
    sizes = [max(10.0, 200 * row["count"] / max(r["count"] for r in rows)) for row in rows]
    x, y = [row["probability"] for row in rows], [row["observed"] for row in rows]
    axes.plot(x, y, color="C1", linewidth=1)
    axes.scatter(x, y, s=sizes, color="C1", label="calibrated (marker area: pairs)")
    axes.legend(fontsize=8)
    return _svg(figure)


def plot_rounds(rounds: list[dict[str, Any]]) -> str:
    """The label-free selection score and the judge agreement per distillation round."""
    figure, axes = _figure(4.8, 3.2)
    numbers = [row["round"] for row in rounds]
    axes.plot(numbers, [row["selection"] for row in rounds], marker="o", label="label-free selection score")
    axes.plot(numbers, [row["top1"] for row in rounds], marker="s", label="top-1 agreement with the judge")
    axes.set_xticks(numbers)
    axes.set_xlabel("round")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=8)
    return _svg(figure)


def render(runs: list[RunReport], title: str, intervals: Comparison | None = None) -> str:
    """The HTML page for one or several runs; `intervals`: `eztag compare`'s differences from the first run."""
    import jinja2

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True)
    environment.filters["num"] = lambda value, digits=4: "-" if value is None else f"{value:.{digits}f}"
    template = environment.from_string(resources.files("eztag").joinpath("report.html.j2").read_text("utf-8"))
    evaluated = [run for run in runs if run.metrics]
    plots = {
        "metrics_at_k": plot_metrics_at_k(runs) if evaluated else None,
        "recall_curve": plot_recall_curve(runs) if evaluated else None,
        "groups": plot_groups(runs) if any(run.labels for run in runs) else None,
        "log_odds": {run.name: plot_log_odds(run.judge["log_odds"]) for run in runs if run.judge},
        "reliability": {
            run.name: plot_reliability(run.judge["gold"]["reliability"])
            for run in runs
            if run.judge and run.judge["gold"]
        },
        "calibration": {
            run.name: plot_calibration(run.judge["calibration"]["reliability"])
            for run in runs
            if run.judge and run.judge["calibration"] and run.judge["calibration"]["reliability"]
        },
        "rounds": {run.name: plot_rounds(run.distil["rounds"]) for run in runs if run.distil and run.distil["rounds"]},
    }
    evaluated_ks = [run.metrics["ks"] for run in evaluated if run.metrics is not None]
    ks = [k for k in evaluated_ks[0] if all(k in other for other in evaluated_ks)] if evaluated_ks else []
    return template.render(
        title=title,
        runs=runs,
        ks=ks,
        table_metrics=evaluate.TABLE_METRICS,
        plots=plots,
        groups=GROUPS,
        intervals=intervals,
        version=__version__,
        generated=time.strftime("%Y-%m-%d %H:%M:%S %z"),
    )


def write_report(run_dir: Path, out: Path) -> Path:
    """Write the page of one run to `out`."""
    run = read_run(run_dir)
    write_text(out, render([run], f"eztag report: {run.name}"))
    return out


def write_comparison(
    run_dirs: list[Path],
    out_dir: Path,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
) -> str:
    """comparison.md, recall_at_k.png and comparison.html for several runs, with paired bootstrap intervals against
    the first run; returns the Markdown (the metric table, then the intervals)."""
    table, intervals = evaluate.compare(run_dirs, out_dir, resamples, confidence)
    runs = [read_run(run_dir, name) for run_dir, name in zip(run_dirs, evaluate.run_names(run_dirs), strict=True)]
    title = "eztag comparison: " + ", ".join(run.name for run in runs)
    write_text(out_dir / "comparison.html", render(runs, title, intervals))
    return table
