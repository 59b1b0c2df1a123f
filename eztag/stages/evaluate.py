"""Evaluate: metrics of the tags against the ground truth as JSON, a Markdown table and a recall@k plot."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from eztag import calibration, comparison, metrics, plots
from eztag.artifacts import file_checksum, write_json, write_parquet, write_text
from eztag.errors import EztagError
from eztag.readers import RowError, column_names, read_records
from eztag.stages.contract import StageInputs

log = logging.getLogger(__name__)

NAME = "evaluate"
HELP = "score the tags against the ground truth"
REQUIRES = ("ingest", "tag")
OPTIONAL: tuple[str, ...] = ()
CONFLICTS: dict[str, str] = {}
PROVIDES: dict[str, str] = {}
PATH_FIELDS = ("label_frequencies",)
PROBABILITY_DEPTH = 10  # the calibrated probabilities of each document's first 10 tags are checked against the truth


@dataclasses.dataclass
class Config:
    """Which cut-offs and propensity parameters to use, and where PSP's label frequencies come from."""

    ks: list[int] = dataclasses.field(default_factory=lambda: list(metrics.DEFAULT_KS))
    """Cut-offs k of the @k metrics; those beyond the ranked lists' depth (`tag.k`, when below the label count) are
    left out with a note."""
    psp_a: float = 0.55
    """Propensity parameter A of PSP@k (Jain et al. 2016)."""
    psp_b: float = 1.5
    """Propensity parameter B of PSP@k."""
    label_frequencies: str | None = None
    """File (JSONL, CSV, TSV, Parquet; relative to the pipeline file's folder) of PSP's label frequencies: training
    ground truth as (`doc_id`, `label_id`) rows, or label counts as (`label_id`, `count`) rows; `None`: counted in the
    evaluated documents' own ground truth."""
    label_frequency_documents: int | None = None
    """N, the number of training documents; required with a label-count file (a ground-truth file counts its own)."""

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ValueError("ks must be a non-empty list of positive integers")
        if self.label_frequency_documents is not None and self.label_frequency_documents < 1:
            raise ValueError("label_frequency_documents must be a positive integer")


def check_pipeline(config: Config, configs: Mapping[str, Any]) -> str | None:
    """Skipped (a note, not an error after tagging) when the documents carry no ground truth: no
    `ingest.ground_truth` file and no `ingest.doc_labels` column in the documents file."""
    ingest = configs["ingest"]
    if ingest.ground_truth or not Path(ingest.documents).is_file():
        return None  # a missing file is the ingest check's error
    wanted = {ingest.doc_labels} if ingest.doc_labels else set()
    if wanted and ingest.doc_labels in column_names(Path(ingest.documents), ingest.format, wanted):
        return None
    return (
        f"the documents have no ground truth (no '{ingest.doc_labels}' column in {ingest.documents} and no "
        "ingest.ground_truth file); the tags are in tag/tags.parquet and report.html"
    )


def fingerprint(config: Config) -> dict[str, Any]:
    """The label-frequency file's checksum, so a changed file re-evaluates."""
    path = Path(config.label_frequencies or "")
    return {str(path): file_checksum(path)} if config.label_frequencies and path.is_file() else {}


def _count(record: dict[str, Any], field: str, path: Path, row: int) -> int:
    value = record.get(field)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # CSV and TSV cells are strings
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EztagError(f"expected a non-negative integer, got {value!r}", file=path, row=row, field=field)
    return value


def label_frequencies(config: Config, label_ids: list[str]) -> tuple[np.ndarray, int, dict[str, Any]]:
    """(documents per label row, number of documents, provenance) from `config.label_frequencies`.

    The file (JSONL, CSV, TSV or Parquet) holds either training ground truth, one (doc_id, label_id) pair per
    row, or label counts, (label_id, count) rows, with the number of training documents in
    `label_frequency_documents`. Labels that are not in the label set are counted and otherwise ignored.
    """
    path = Path(config.label_frequencies or "")
    row_of = {label_id: row for row, label_id in enumerate(label_ids)}
    counts = np.zeros(len(label_ids))
    documents: set[str] = set()
    unknown: set[str] = set()
    mode = None
    for row, record in read_records(path):
        if isinstance(record, RowError):
            raise EztagError(record.message, file=path, row=row, field=record.field)
        mode = mode or ("pairs" if "doc_id" in record else "counts" if "count" in record else None)
        if mode is None or "label_id" not in record:
            raise EztagError("expected columns (doc_id, label_id) or (label_id, count)", file=path, row=row)
        label_id = str(record["label_id"])
        if mode == "pairs":
            documents.add(str(record["doc_id"]))
        if label_id not in row_of:
            unknown.add(label_id)
            continue
        counts[row_of[label_id]] += 1 if mode == "pairs" else _count(record, "count", path, row)
    if mode is None:
        raise EztagError("no rows", file=path)
    if mode == "counts" and config.label_frequency_documents is None:
        raise EztagError(
            "a label-count file needs the number of training documents", field="evaluate.label_frequency_documents"
        )
    n_documents = len(documents) if mode == "pairs" else int(config.label_frequency_documents or 0)
    if counts.max() > n_documents:
        raise EztagError(f"a label count exceeds the {n_documents} documents", file=path)
    source = {"source": str(path), "kind": mode, "documents": n_documents, "unknown_labels": len(unknown)}
    return counts, n_documents, source


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
    width = int(tags["rank"].to_numpy().max()) if tags.height else 1
    predicted = np.full((documents.height, width), -1, dtype=np.int64)
    joined = tags.join(documents, on="doc_id").join(labels, on="label_id")
    predicted[joined["doc_row"].to_numpy(), joined["rank"].to_numpy() - 1] = joined["label_row"].to_numpy()
    return predicted, label_sets(ingest_dir, ground_truth), labels.height


def reported_ks(ks: list[int], depth: int, n_labels: int) -> tuple[list[int], list[str]]:
    """The cut-offs to report of ranked lists `depth` deep over `n_labels` labels, and a note on those dropped:
    a cut-off beyond the lists' depth would only repeat the metric at the depth."""
    kept = [k for k in ks if k <= depth] or [depth]
    dropped = [k for k in ks if k not in kept]
    if not dropped:
        return kept, []
    held = f"all {n_labels} labels" if depth >= n_labels else f"{depth} of the {n_labels} labels (tag.k)"
    return kept, [f"{', '.join(f'@{k}' for k in dropped)} not reported: the ranked lists hold {held}"]


def run(config: Config, out_dir: Path, inputs: StageInputs) -> dict[str, Any]:
    """Write metrics.json, metrics.md, recall_at_k.png and per_document.parquet (one row per evaluated document:
    the numbers the metrics average, for `eztag compare`'s intervals); ranking metrics on the ranked list, set
    metrics on the selected tags."""
    ingest_dir = inputs["ingest"]
    tags = pl.read_parquet(inputs["tag"] / "tags.parquet")
    predicted, gold, n_labels = load_predictions(ingest_dir, tags)
    evaluated = sum(1 for labels in gold if labels)
    propensity_counts, propensity = None, {"source": "evaluated", "documents": evaluated}
    if config.label_frequencies:
        label_ids = pl.read_parquet(ingest_dir / "labels.parquet", columns=["label_id"])["label_id"].to_list()
        counts, n_documents, propensity = label_frequencies(config, label_ids)
        propensity_counts = (counts, n_documents)
    ks, notes = reported_ks(config.ks, predicted.shape[1], n_labels)
    for note in notes:
        log.info(f"evaluate: {note}")
    values, per_document = metrics.evaluate_documents(
        predicted, gold, n_labels, tuple(ks), config.psp_a, config.psp_b, propensity_counts
    )
    doc_ids = pl.read_parquet(ingest_dir / "documents.parquet", columns=["doc_id"])["doc_id"]
    documents = pl.DataFrame({"doc_id": doc_ids.filter(pl.Series([bool(labels) for labels in gold]))})
    curve = metrics.recall_curve(predicted, gold)
    result: dict[str, Any] = {
        "metrics": values,
        "recall_curve": curve,
        "documents_evaluated": evaluated,
        "documents_without_ground_truth": len(gold) - evaluated,
        "ks": ks,
        "propensity": propensity,
    }
    table = comparison.markdown_table({out_dir.parent.name: values}, ks)
    if notes:
        result["notes"] = notes
        table += "".join(f"\nNote: {note}\n" for note in notes)
    if "selected" in tags.columns:
        selected = label_sets(ingest_dir, tags.filter(pl.col("selected")))
        result["set_metrics"] = metrics.set_metrics(selected, gold)
        per_document[comparison.SET_METRIC] = metrics.example_f1(selected, gold)
        table += "\nSelected tags:\n\n" + comparison.set_table({out_dir.parent.name: result["set_metrics"]})
    if "probability" in tags.columns:
        result["probabilities"] = probability_check(ingest_dir, tags, documents)
        checked = result["probabilities"]
        table += (
            f"\nCalibrated probabilities of the first {PROBABILITY_DEPTH} tags against the ground truth: ECE "
            f"{checked['ece']:.4f}; expected labels per document (the probabilities' sum over the ranked list) "
            f"{checked['expected_per_doc']:.2f}, gold {checked['gold_per_doc']:.2f}.\n"
        )
    write_parquet(out_dir / comparison.PER_DOCUMENT, documents.with_columns(**per_document))
    write_json(out_dir / "metrics.json", result)
    write_text(out_dir / "metrics.md", table)
    figure, axes = plots.png_figure(6, 4)
    plots.draw_recall_curves(axes, {out_dir.parent.name: curve})
    plots.save_png(figure, out_dir / "recall_at_k.png")
    return result


def probability_check(ingest_dir: Path, tags: pl.DataFrame, documents: pl.DataFrame) -> dict[str, Any]:
    """How true the calibrated probabilities are on the documents with ground truth: ECE and reliability points of
    each document's first PROBABILITY_DEPTH tags (a tag is 1 when it is a gold label), and the expected number of
    labels per document (the probabilities' sum over the ranked list) beside the gold number."""
    truth = pl.read_parquet(ingest_dir / "ground_truth.parquet").unique().with_columns(gold=pl.lit(1.0))
    ranked = (
        tags.join(documents, on="doc_id")
        .join(truth, on=["doc_id", "label_id"], how="left")
        .with_columns(pl.col("gold").fill_null(0.0))
    )
    top = ranked.filter(pl.col("rank") <= PROBABILITY_DEPTH)
    probability, gold = top["probability"].to_numpy(), top["gold"].to_numpy()
    return {
        "depth": PROBABILITY_DEPTH,
        "ece": round(calibration.expected_calibration_error(probability, gold), 4),
        "reliability": calibration.reliability(probability, gold),
        "expected_per_doc": round(float(ranked["probability"].sum()) / documents.height, 4),
        "gold_per_doc": round(truth.join(documents, on="doc_id").height / documents.height, 4),
    }
