"""Ingest: validate documents, labels and optional ground truth into canonical Parquet files."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, overload

import polars as pl

from eztag.artifacts import file_checksum, write_json, write_parquet
from eztag.errors import EztagError, did_you_mean
from eztag.readers import Record, RowError, column_names, read_records
from eztag.stages.contract import StageInputs

NAME = "ingest"
HELP = "validate documents, labels and ground truth into Parquet"
REQUIRES: tuple[str, ...] = ()
OPTIONAL: tuple[str, ...] = ()
CONFLICTS: dict[str, str] = {}
PROVIDES: dict[str, str] = {}
PATH_FIELDS = ("documents", "labels", "ground_truth")
XC_DOCUMENT_FIELDS = {"doc_id": "uid", "doc_text": "content", "doc_title": "title", "doc_labels": "target_ind"}
DOC_LABELS = "labels"
XC_LABEL_FIELDS = {"label_id": "uid", "label_text": "title", "label_description": None, "label_facet": None}


@dataclasses.dataclass
class Config:
    """Where the inputs are and which columns hold what."""

    documents: str
    """The documents file: JSONL (optionally gzipped), CSV, TSV or Parquet, or an XC raw-text file (`trn.json.gz` …);
    a relative path is taken from the pipeline file's folder."""
    labels: str
    """The label set file, in the same formats as `documents`; a relative path is taken from the pipeline file's
    folder."""
    ground_truth: str | None = None
    """Optional separate ground-truth file with one (`doc_id`, `label_id`) row per pair, read in `format` (not with a
    non-default `doc_labels`); `None`: the ground truth is the documents' `doc_labels` column, when they have one."""
    format: Literal["auto", "jsonl", "csv", "tsv", "parquet", "xc"] = "auto"
    """File format of every input: `jsonl`, `csv`, `tsv`, `parquet`, or `xc` (the extreme-classification repository's
    raw-text JSON lines, whose fixed column names replace the column settings below); `auto`: told by each file's
    extension."""
    doc_id: str = "id"
    """Documents' id column (string or integer ids, unique)."""
    doc_text: str = "text"
    """Documents' text column (required, non-empty)."""
    doc_title: str | None = "title"
    """Documents' optional title column (`None`: read none); a file may lack the default column, not one named
    here."""
    doc_labels: str | None = DOC_LABELS
    """Documents' optional ground-truth column, a list of label ids or one string of ids joined by `label_separator`
    (`None`: read none); a file may lack the default column, not one named here."""
    label_id: str = "id"
    """Labels' id column (string or integer ids, unique)."""
    label_text: str = "text"
    """Labels' text column (required, non-empty, at most `max_label_chars` characters)."""
    label_description: str | None = "description"
    """Labels' optional description column (`None`: read none); a file may lack the default column, not one named
    here."""
    label_facet: str | None = "facet"
    """Labels' optional facet column: the label's group, e.g. a debtags facet or a thesaurus branch (`None`: read
    none); a file may lack the default column, not one named here."""
    label_separator: str = "|"
    """Separator of the label ids when a document's `doc_labels` value is one string instead of a list."""
    on_error: Literal["fail", "skip"] = "fail"
    """What a bad row does: `fail` ends the run with a one-line error naming file, row and field; `skip` skips the row
    (or drops the unknown label) and counts it by reason in `ingest/report.json`."""
    max_document_chars: int = 100_000
    """Longest document text in characters: a longer one is truncated to it and counted, never an error."""
    max_label_chars: int = 1_000
    """Longest label text in characters: a longer label is a bad row (`label_too_long`)."""

    def __post_init__(self) -> None:
        if self.ground_truth and self.doc_labels and self.doc_labels != DOC_LABELS:
            raise ValueError("set either ground_truth (a file) or doc_labels (a column), not both")
        if self.format == "xc":
            for key, value in {**XC_DOCUMENT_FIELDS, **XC_LABEL_FIELDS}.items():
                setattr(self, key, value)
        if self.max_document_chars < 1 or self.max_label_chars < 1:
            raise ValueError("max_document_chars and max_label_chars must be positive")


DEFAULTS = Config(documents="", labels="")


class Problems:
    """Row-level problems: raised at once (on_error='fail') or skipped and counted (on_error='skip')."""

    def __init__(self, skip: bool) -> None:
        self.skip = skip
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []

    def report(self, error: RowError) -> None:
        if not self.skip:
            raise error
        self.counts[error.reason] += 1
        if len(self.examples) < 20:
            self.examples.append(str(error))


def check_pipeline(config: Config, configs: Mapping[str, Any]) -> None:
    """Every input file named in the pipeline exists: all missing ones named at once, before any stage runs."""
    missing = [(field, path) for field in PATH_FIELDS if (path := getattr(config, field)) and not Path(path).exists()]
    if missing:
        fields = ", ".join(f"ingest.{field}" for field, _ in missing)
        raise EztagError(f"file not found: {', '.join(path for _, path in missing)}", field=fields)


def fingerprint(config: Config) -> dict[str, Any]:
    """Input checksums, so a changed input file reruns the stage."""
    paths = [config.documents, config.labels, config.ground_truth]
    return {path: file_checksum(Path(path)) for path in paths if path and Path(path).is_file()}


def _check_columns(path: Path, fmt: str, required: list[str], optional: dict[str, str | None]) -> set[str]:
    """Fail on missing required columns; return the optional columns the file has."""
    columns = column_names(path, fmt, {*required, *optional})
    if not columns:
        raise EztagError("file is empty", file=path)
    for name in required:
        if name not in columns:
            raise EztagError(f"missing column{did_you_mean(name, columns)}", file=path, field=name)
    present = set()
    for name, default in optional.items():
        if name in columns:
            present.add(name)
        elif name != default:
            raise EztagError(f"missing column{did_you_mean(name, columns)}", file=path, field=name)
    return present


@overload
def _text(record: Record, field: str, *, path: Path, row: int, required: Literal[True]) -> str: ...


@overload
def _text(record: Record, field: str, *, path: Path, row: int, required: bool) -> str | None: ...


def _text(record: Record, field: str, *, path: Path, row: int, required: bool) -> str | None:
    value = record.get(field)
    if value is None:
        if required:
            raise RowError("missing_text", "missing value", file=path, row=row, field=field)
        return None
    if not isinstance(value, str):
        raise RowError("wrong_type", f"expected text, got {type(value).__name__}", file=path, row=row, field=field)
    if required and not value.strip():
        raise RowError("empty_text", "empty or whitespace-only text", file=path, row=row, field=field)
    return value


def _identifier(record: Record, field: str, *, path: Path, row: int) -> str:
    value = record.get(field)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        kind = "missing value" if value is None else f"expected a string or integer id, got {type(value).__name__}"
        raise RowError("bad_id", kind, file=path, row=row, field=field)
    value = str(value).strip()
    if not value:
        raise RowError("bad_id", "empty id", file=path, row=row, field=field)
    return value


def _read_labels(config: Config, problems: Problems) -> pl.DataFrame:
    path = Path(config.labels)
    fmt = "jsonl" if config.format == "xc" else config.format
    named = {config.label_description: DEFAULTS.label_description, config.label_facet: DEFAULTS.label_facet}
    optional = {name: default for name, default in named.items() if name}
    present = _check_columns(path, fmt, [config.label_id, config.label_text], optional)
    ids: list[str] = []
    texts: list[str] = []
    descriptions: list[str | None] = []
    facets: list[str | None] = []
    first_row: dict[str, int] = {}
    for row, record in read_records(path, fmt):
        try:
            if isinstance(record, RowError):
                raise record
            label_id = _identifier(record, config.label_id, path=path, row=row)
            text = _text(record, config.label_text, path=path, row=row, required=True)
            description = facet = None
            if config.label_description in present:
                description = _text(record, config.label_description, path=path, row=row, required=False)
            if config.label_facet in present:
                facet = _text(record, config.label_facet, path=path, row=row, required=False)
            if len(text) > config.max_label_chars:
                raise RowError(
                    "label_too_long",
                    f"label text has {len(text):,} characters, more than max_label_chars = {config.max_label_chars:,}",
                    file=path,
                    row=row,
                    field=config.label_text,
                )
            if label_id in first_row:
                raise RowError(
                    "duplicate_id",
                    f"duplicate label id '{label_id}' (first at row {first_row[label_id]})",
                    file=path,
                    row=row,
                    field=config.label_id,
                )
        except RowError as error:
            problems.report(error)
            continue
        first_row[label_id] = row
        ids.append(label_id)
        texts.append(text.strip())
        descriptions.append(description.strip() if description and description.strip() else None)
        facets.append(facet.strip() if facet and facet.strip() else None)
    if not ids:
        raise EztagError("the label set is empty: no valid label rows", file=path)
    return pl.DataFrame(
        {"label_id": ids, "text": texts, "description": descriptions, "facet": facets},
        schema={"label_id": pl.String, "text": pl.String, "description": pl.String, "facet": pl.String},
    )


def _gold_ids(value: Any, config: Config, label_ids: list[str], *, path: Path, row: int) -> list[str]:
    field = config.doc_labels or ""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(config.label_separator) if part.strip()]
    if not isinstance(value, list):
        raise RowError(
            "wrong_type", f"expected a list of label ids, got {type(value).__name__}", file=path, row=row, field=field
        )
    if config.format == "xc":
        out = []
        for index in value:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(label_ids):
                raise RowError(
                    "unknown_label", f"label index {index!r} is outside the label file", file=path, row=row, field=field
                )
            out.append(label_ids[index])
        return out
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise RowError(
                "wrong_type", f"label id {item!r} is not a string or integer", file=path, row=row, field=field
            )
    return [str(item).strip() for item in value]


def _read_documents(
    config: Config, label_ids: list[str], problems: Problems
) -> tuple[pl.DataFrame, list[tuple[str, str]], int]:
    path = Path(config.documents)
    fmt = "jsonl" if config.format == "xc" else config.format
    optional = {
        name: default
        for name, default in ((config.doc_title, DEFAULTS.doc_title), (config.doc_labels, DEFAULTS.doc_labels))
        if name
    }
    present = _check_columns(path, fmt, [config.doc_id, config.doc_text], optional)
    known = set(label_ids)
    ids: list[str] = []
    titles: list[str | None] = []
    texts: list[str] = []
    pairs: list[tuple[str, str]] = []
    first_row: dict[str, int] = {}
    truncated = 0
    for row, record in read_records(path, fmt):
        try:
            if isinstance(record, RowError):
                raise record
            doc_id = _identifier(record, config.doc_id, path=path, row=row)
            text = _text(record, config.doc_text, path=path, row=row, required=True)
            title = (
                _text(record, config.doc_title, path=path, row=row, required=False)
                if config.doc_title in present
                else None
            )
            gold = []
            if config.doc_labels in present:
                gold = _gold_ids(record.get(config.doc_labels), config, label_ids, path=path, row=row)
            if doc_id in first_row:
                raise RowError(
                    "duplicate_id",
                    f"duplicate document id '{doc_id}' (first at row {first_row[doc_id]})",
                    file=path,
                    row=row,
                    field=config.doc_id,
                )
        except RowError as error:
            problems.report(error)
            continue
        kept_gold = []
        for label_id in dict.fromkeys(gold):
            if label_id in known:
                kept_gold.append(label_id)
            else:
                problems.report(
                    RowError(
                        "unknown_label",
                        f"unknown label id '{label_id}' (not in {config.labels})",
                        file=path,
                        row=row,
                        field=config.doc_labels,
                    )
                )
        if len(text) > config.max_document_chars:
            text = text[: config.max_document_chars]
            truncated += 1
        first_row[doc_id] = row
        ids.append(doc_id)
        titles.append(title.strip() if title else None)
        texts.append(text.strip())
        pairs.extend((doc_id, label_id) for label_id in kept_gold)
    if not ids:
        raise EztagError("no valid documents", file=path)
    documents = pl.DataFrame(
        {"doc_id": ids, "title": titles, "text": texts},
        schema={"doc_id": pl.String, "title": pl.String, "text": pl.String},
    )
    return documents, pairs, truncated


def _read_ground_truth(
    config: Config, doc_ids: set[str], label_ids: set[str], problems: Problems
) -> list[tuple[str, str]]:
    path = Path(config.ground_truth or "")
    _check_columns(path, config.format, ["doc_id", "label_id"], {})
    pairs = []
    for row, record in read_records(path, config.format):
        try:
            if isinstance(record, RowError):
                raise record
            doc_id = _identifier(record, "doc_id", path=path, row=row)
            label_id = _identifier(record, "label_id", path=path, row=row)
            if doc_id not in doc_ids:
                raise RowError(
                    "unknown_document", f"unknown document id '{doc_id}'", file=path, row=row, field="doc_id"
                )
            if label_id not in label_ids:
                raise RowError("unknown_label", f"unknown label id '{label_id}'", file=path, row=row, field="label_id")
        except RowError as error:
            problems.report(error)
            continue
        pairs.append((doc_id, label_id))
    return pairs


def run(config: Config, out_dir: Path, inputs: StageInputs) -> dict[str, Any]:
    """Validate the inputs and write documents.parquet, labels.parquet, ground_truth.parquet, report.json."""
    problems = Problems(skip=config.on_error == "skip")
    labels = _read_labels(config, problems)
    label_ids = labels["label_id"].to_list()
    documents, pairs, truncated = _read_documents(config, label_ids, problems)
    if config.ground_truth:
        pairs += _read_ground_truth(config, set(documents["doc_id"]), set(label_ids), problems)
    ground_truth = pl.DataFrame(pairs, schema={"doc_id": pl.String, "label_id": pl.String}, orient="row").unique(
        maintain_order=True
    )
    write_parquet(out_dir / "labels.parquet", labels)
    write_parquet(out_dir / "documents.parquet", documents)
    write_parquet(out_dir / "ground_truth.parquet", ground_truth)
    report = {
        "documents": documents.height,
        "labels": labels.height,
        "ground_truth_pairs": ground_truth.height,
        "documents_with_ground_truth": ground_truth["doc_id"].n_unique(),
        "documents_truncated": truncated,
        "skipped": dict(problems.counts),
        "skipped_examples": problems.examples,
    }
    write_json(out_dir / "report.json", report)
    return report
