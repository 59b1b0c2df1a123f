"""Read JSONL, CSV and Parquet files (optionally gzipped) as numbered records, with one-line errors."""

from __future__ import annotations

import codecs
import gzip
import json
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from eztag.errors import EztagError

Record = dict[str, Any]
FORMATS = ("auto", "jsonl", "csv", "tsv", "parquet", "xc")


class RowError(EztagError):
    """A problem confined to one row: fatal by default, skipped and counted when the user asks."""

    def __init__(self, reason: str, message: str, *, file: str | Path, row: int, field: str | None = None) -> None:
        self.reason = reason
        super().__init__(message, file=file, row=row, field=field)


def detect_format(path: Path) -> str:
    """The format implied by a file name (`.jsonl`, `.json`, `.csv`, `.tsv`, `.parquet`, optionally `.gz`)."""
    name = path.name.lower().removesuffix(".gz")
    for suffixes, fmt in (((".jsonl", ".ndjson", ".json"), "jsonl"), ((".csv",), "csv"), ((".tsv",), "tsv")):
        if name.endswith(suffixes):
            return fmt
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise EztagError(
        "cannot tell the format from the file name; set format = 'jsonl', 'csv', 'tsv' or 'parquet'", file=path
    )


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise EztagError("is a directory, expected a file", file=path)
    if not path.exists():
        raise EztagError("file not found", file=path)


def _open_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped for `.gz`, without a leading UTF-8 byte order mark."""
    _check_file(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise EztagError(f"cannot read: {error.strerror}", file=path) from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as error:
            raise EztagError(f"corrupt or truncated gzip file ({error})", file=path) from None
    return raw.removeprefix(codecs.BOM_UTF8)


def _clean(value: Any) -> Any:
    """Map float NaN to None so every format spells a missing value the same way."""
    return None if isinstance(value, float) and math.isnan(value) else value


def read_records(path: Path, fmt: str = "auto") -> Iterator[tuple[int, Record | RowError]]:
    """Yield (row number, record) in file order; a row that cannot be read yields a RowError instead.

    Rows are numbered from 1: JSONL rows are line numbers, CSV rows count data rows after the header,
    Parquet rows count from the first row.
    """
    fmt = detect_format(path) if fmt in ("auto", "xc") else fmt
    if fmt == "parquet":
        yield from _parquet_records(path)
    elif fmt == "jsonl":
        yield from _jsonl_records(path)
    else:
        yield from _csv_records(path, separator="\t" if fmt == "tsv" else ",")


def _jsonl_records(path: Path) -> Iterator[tuple[int, Record | RowError]]:
    data = _open_bytes(path)
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            yield number, RowError("bad_utf8", f"invalid UTF-8 at byte {error.start}", file=path, row=number)
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            yield number, RowError("bad_json", f"invalid JSON ({error.msg})", file=path, row=number)
            continue
        if not isinstance(record, dict):
            yield number, RowError("bad_json", "expected a JSON object", file=path, row=number)
            continue
        yield number, {key: _clean(value) for key, value in record.items()}


def _csv_records(path: Path, separator: str) -> Iterator[tuple[int, Record | RowError]]:
    data = _open_bytes(path)
    if not data.strip():
        raise EztagError("file is empty", file=path)
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise EztagError(
                f"invalid UTF-8 at byte {error.start} (line {number} of the file)", file=path, row=max(number - 1, 1)
            ) from None
    try:
        frame = pl.read_csv(data, separator=separator, infer_schema=False, quote_char='"')
    except (pl.exceptions.PolarsError, OSError) as error:
        raise EztagError(f"cannot parse as CSV: {str(error).splitlines()[0]}", file=path) from None
    for number, record in enumerate(frame.iter_rows(named=True), start=1):
        yield number, record


def _parquet_records(path: Path) -> Iterator[tuple[int, Record | RowError]]:
    _check_file(path)
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise EztagError(f"not a readable Parquet file ({str(error).splitlines()[0]})", file=path) from None
    for number, record in enumerate(frame.iter_rows(named=True), start=1):
        yield number, {key: _clean(value) for key, value in record.items()}


def columns_of(path: Path, fmt: str = "auto") -> list[str] | None:
    """The column names of a CSV or Parquet file (None for JSONL, whose keys may vary per row)."""
    fmt = detect_format(path) if fmt in ("auto", "xc") else fmt
    if fmt == "parquet":
        _check_file(path)
        try:
            return list(pl.read_parquet_schema(path))
        except (pl.exceptions.PolarsError, OSError) as error:
            raise EztagError(f"not a readable Parquet file ({str(error).splitlines()[0]})", file=path) from None
    if fmt in ("csv", "tsv"):
        header = _open_bytes(path).split(b"\n", 1)[0].decode("utf-8", errors="replace").strip("\r")
        return [name.strip('"') for name in header.split("\t" if fmt == "tsv" else ",")] if header else []
    return None


def column_names(path: Path, fmt: str, wanted: set[str]) -> list[str]:
    """A file's column names: a CSV's or Parquet's header, or the keys of JSONL rows read until every `wanted`
    key is seen (rows may differ in their keys)."""
    columns = columns_of(path, fmt)
    if columns is not None:
        return columns
    seen: dict[str, None] = {}
    first_error = None
    for _, record in read_records(path, fmt):
        if isinstance(record, RowError):
            first_error = first_error or record
            continue
        seen.update(dict.fromkeys(record))
        if wanted <= seen.keys():
            break
    if not seen and first_error is not None:
        raise EztagError(f"no readable rows; first problem: {first_error.message}", file=path, row=first_error.row)
    return list(seen)
