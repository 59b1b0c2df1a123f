"""Evaluate: metrics of the tags against the ground truth as JSON, a Markdown table and a recall@k plot."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from eztag import metrics
from eztag.artifacts import atomic_path, write_json, write_text
from eztag.errors import EztagError

NAME = "evaluate"
REQUIRES = ("ingest", "tag")
PATH_FIELDS: tuple[str, ...] = ()
TABLE_METRICS = ("P", "R", "nDCG", "PSP", "coverage")


@dataclasses.dataclass
class Config:
    """Which cut-offs and propensity parameters to use."""

    ks: list[int] = dataclasses.field(default_factory=lambda: list(metrics.DEFAULT_KS))
    psp_a: float = 0.55
    psp_b: float = 1.5

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ValueError("ks must be a non-empty list of positive integers")


def _rows(ingest_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(doc_id -> doc_row, label_id -> label_row) frames in ingest order."""
    documents = pl.read_parquet(ingest_dir / "documents.parquet", columns=["doc_id"]).with_row_index("doc_row")
    labels = pl.read_parquet(ingest_dir / "labels.parquet", columns=["label_id"]).with_row_index("label_row")
    return documents, labels


def label_sets(ingest_dir: Path, pairs: pl.DataFrame) -> list[set[int]]:
    """The label rows of each document (in ingest order) among (doc_id, label_id) `pairs`."""
    documents, labels = _rows(ingest_dir)
    sets: list[set[int]] = [set() for _ in range(documents.height)]
    joined = pairs.join(documents, on="doc_id").join(labels, on="label_id")
    for doc_row, label_row in joined.select("doc_row", "label_row").iter_rows():
        sets[doc_row].add(label_row)
    return sets


def load_predictions(ingest_dir: Path, tags: pl.DataFrame) -> tuple[np.ndarray, list[set[int]], int]:
    """(predicted label rows [documents, max rank], gold label rows per document, number of labels)."""
    documents, labels = _rows(ingest_dir)
    ground_truth = pl.read_parquet(ingest_dir / "ground_truth.parquet")
    if ground_truth.is_empty():
        raise EztagError(
            "no ground truth: give ingest.ground_truth or a labels column in the documents", field="[evaluate]"
        )
    width = int(tags["rank"].max() or 1) if tags.height else 1
    predicted = np.full((documents.height, width), -1, dtype=np.int64)
    joined = tags.join(documents, on="doc_id").join(labels, on="label_id")
    predicted[joined["doc_row"].to_numpy(), joined["rank"].to_numpy() - 1] = joined["label_row"].to_numpy()
    return predicted, label_sets(ingest_dir, ground_truth), labels.height


def set_table(name: str, values: dict[str, float]) -> str:
    """One Markdown row of the selected tags' set metrics."""
    columns = ("example_F1", "micro_F1", "macro_F1", "example_P", "example_R", "tags_per_doc", "gold_per_doc")
    return (
        "| run | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns) + "\n"
        f"| {name} | " + " | ".join(f"{values[column]:.4f}" for column in columns) + " |\n"
    )


def markdown_table(results: dict[str, dict[str, float]], ks: list[int]) -> str:
    """One row per (run, metric), one column per k."""
    lines = ["| run | metric | " + " | ".join(f"@{k}" for k in ks) + " |", "|---|---|" + "---:|" * len(ks)]
    for run_name, values in results.items():
        for metric in TABLE_METRICS:
            cells = " | ".join(f"{values[f'{metric}@{k}']:.4f}" for k in ks)
            lines.append(f"| {run_name} | {metric} | {cells} |")
    return "\n".join(lines) + "\n"


def plot_recall(curves: dict[str, list[float]], path: Path) -> None:
    """recall@k curves of one or several runs in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for name, curve in curves.items():
        axes.plot(np.arange(1, len(curve) + 1), curve, label=name)
    axes.set_xscale("log")
    axes.set_xlabel("k")
    axes.set_ylabel("recall@k")
    axes.set_ylim(0, 1)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def run(config: Config, out_dir: Path, ingest_dir: Path, tag_dir: Path) -> dict[str, Any]:
    """Write metrics.json, metrics.md and recall_at_k.png; ranking metrics on the ranked list, set metrics on the
    selected tags."""
    tags = pl.read_parquet(tag_dir / "tags.parquet")
    predicted, gold, n_labels = load_predictions(ingest_dir, tags)
    values = metrics.evaluate(predicted, gold, n_labels, tuple(config.ks), config.psp_a, config.psp_b)
    curve = metrics.recall_curve(predicted, gold)
    evaluated = sum(1 for labels in gold if labels)
    result = {
        "metrics": values,
        "recall_curve": curve,
        "documents_evaluated": evaluated,
        "documents_without_ground_truth": len(gold) - evaluated,
        "ks": config.ks,
    }
    table = markdown_table({out_dir.parent.name: values}, config.ks)
    if "selected" in tags.columns:
        result["set_metrics"] = metrics.set_metrics(label_sets(ingest_dir, tags.filter(pl.col("selected"))), gold)
        table += "\nSelected tags:\n\n" + set_table(out_dir.parent.name, result["set_metrics"])
    write_json(out_dir / "metrics.json", result)
    write_text(out_dir / "metrics.md", table)
    plot_recall({out_dir.parent.name: curve}, out_dir / "recall_at_k.png")
    return result


def compare(run_dirs: list[Path], out_dir: Path) -> str:
    """Side-by-side Markdown table and recall@k plot for several finished runs."""
    results, curves, ks = {}, {}, None
    for run_dir in run_dirs:
        path = run_dir / NAME / "metrics.json"
        if not path.exists():
            raise EztagError("no metrics.json: run the evaluate stage first", file=path)
        data = json.loads(path.read_text())
        name = run_dir.resolve().name
        results[name], curves[name] = data["metrics"], data["recall_curve"]
        ks = [k for k in data["ks"] if ks is None or k in ks]
    table = markdown_table(results, ks or [])
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "comparison.md", table)
    plot_recall(curves, out_dir / "recall_at_k.png")
    return table
