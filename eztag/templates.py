"""Text templates with named fields only: `{field}` placeholders, no attribute access, no code."""

from __future__ import annotations

import re
from collections.abc import Mapping

import polars as pl

from eztag.errors import EztagError

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DOCUMENT_COLUMNS = {"doc_id", "title", "text"}  # columns of ingest's documents.parquet a template may name
LABEL_COLUMNS = {"label_id", "text", "description"}  # columns of ingest's labels.parquet a template may name


def template_fields(template: str, *, where: str = "template") -> list[str]:
    """The field names a template uses; rejects anything that is not a plain `{name}`."""
    names = []
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if not _FIELD_NAME.fullmatch(name):
            raise EztagError(f"placeholder '{{{name}}}' is not a plain field name", field=where)
        names.append(name)
    return names


def check_template(template: str, allowed: set[str], *, where: str = "template") -> None:
    """Fail with a clear error when the template names a field outside `allowed`."""
    for name in template_fields(template, where=where):
        if name not in allowed:
            raise EztagError(
                f"unknown template field '{{{name}}}'; known fields: {', '.join(sorted(allowed))}",
                field=where,
            )


def render(template: str, values: Mapping[str, object]) -> str:
    """Fill `{name}` placeholders from `values`; missing or None values render as empty text."""

    def fill(match: re.Match[str]) -> str:
        value = values.get(match.group(1))
        return "" if value is None else str(value)

    return _PLACEHOLDER.sub(fill, template)


def render_rows(frame: pl.DataFrame, template: str) -> list[str]:
    """Render each row of a documents or labels frame through a template, whitespace collapsed."""
    return [" ".join(render(template, row).split()) for row in frame.iter_rows(named=True)]
