"""Text templates with named fields only: `{field}` placeholders, no attribute access, no code.

`[...]` is an optional group: it is rendered only when every field inside it has a non-empty value, so
`{text}[ ({description})]` gives "Audio (Sound)" or, with no description, "Audio". `[[` and `]]` are literal
brackets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import polars as pl

from eztag.errors import EztagError

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GROUP = re.compile(r"\[([^\[\]]*)\]")
_GROUP_OR_PLACEHOLDER = re.compile(r"\[([^\[\]]*)\]|\{([^{}]*)\}")
_OPEN, _CLOSE = "\x00", "\x01"  # stand-ins for the literal brackets `[[` and `]]` while groups are parsed
DOCUMENT_COLUMNS = {"doc_id", "title", "text"}  # columns of ingest's documents.parquet a template may name
LABEL_COLUMNS = {"label_id", "text", "description", "facet"}  # columns of ingest's labels.parquet a template may name


def template_fields(template: str, *, where: str = "template") -> list[str]:
    """The field names a template uses; rejects anything that is not a plain `{name}` and unbalanced groups."""
    names = []
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if not _FIELD_NAME.fullmatch(name):
            raise EztagError(f"placeholder '{{{name}}}' is not a plain field name", field=where)
        names.append(name)
    escaped = _escape(template)
    if "[" in _GROUP.sub("", escaped) or "]" in _GROUP.sub("", escaped):
        raise EztagError("unbalanced '[' or ']' (an optional group is [...], a literal bracket [[ or ]])", field=where)
    if any(not _PLACEHOLDER.search(group) for group in _GROUP.findall(escaped)):
        raise EztagError("an optional group [...] must hold a {field}", field=where)
    return names


def check_template(template: str, allowed: set[str], *, where: str = "template") -> None:
    """Fail with a clear error when the template names a field outside `allowed`."""
    for name in template_fields(template, where=where):
        if name not in allowed:
            raise EztagError(
                f"unknown template field '{{{name}}}'; known fields: {', '.join(sorted(allowed))}",
                field=where,
            )


def _escape(template: str) -> str:
    return template.replace("[[", _OPEN).replace("]]", _CLOSE)


def render(template: str, values: Mapping[str, object]) -> str:
    """Fill `{name}` placeholders from `values`; missing or None values render as empty text, and an optional
    group `[...]` with an empty field renders as nothing."""

    def text(name: str) -> str:
        value = values.get(name)
        return "" if value is None else str(value)

    def fill(match: re.Match[str]) -> str:
        return text(match.group(1))

    def piece(match: re.Match[str]) -> str:
        group, name = match.groups()
        if name is not None:
            return text(name)
        if any(not text(field).strip() for field in _PLACEHOLDER.findall(group)):
            return ""
        return _PLACEHOLDER.sub(fill, group)

    # One pass over the template: a value is never scanned again, so braces or brackets in it stay as they are.
    filled = _GROUP_OR_PLACEHOLDER.sub(piece, _escape(template))
    return filled.replace(_OPEN, "[").replace(_CLOSE, "]")


def render_rows(frame: pl.DataFrame, template: str) -> list[str]:
    """Render each row of a documents or labels frame through a template, whitespace collapsed."""
    return [" ".join(render(template, row).split()) for row in frame.iter_rows(named=True)]
