"""MkDocs hook: the configuration reference, generated from the typed config dataclasses and their attribute
docstrings (read with griffe), replaces `<!-- eztag:configuration -->` in configuration.md.

One source of truth: a key, its type and default come from the dataclass; its meaning from the docstring under the
field. A field without a docstring fails the build.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

MARKER = "<!-- eztag:configuration -->"
ROOT = Path(__file__).resolve().parents[1]


def _type_text(hint: Any) -> str:
    """A type as a reader wants it: Literal values listed, `X | None`, tables for dicts and dataclasses."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return " or ".join(f'`"{value}"`' for value in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if arg is type(None) else _type_text(arg) for arg in args)
    if origin is list:
        return f"list of {_type_text(args[0])}" if args else "list"
    if origin is dict or hint is dict:
        return "table"
    if dataclasses.is_dataclass(hint):
        return "table"
    return getattr(hint, "__name__", str(hint))


def _default_text(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, dict) and not value:
        return "empty"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float) and abs(value) >= 10_000:
        return f"`{value:_}`"
    if dataclasses.is_dataclass(value):
        return "see below"
    return f"`{value}`"


def _escape(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _tables(cls: type, section: str, loader: Any) -> list[str]:
    """The Markdown table of one config dataclass, then those of the dataclasses nested in it."""
    module = loader.load(cls.__module__)
    documented = module[cls.__qualname__]
    hints = typing.get_type_hints(cls)
    lines = [f"## `[{section}]`", ""]
    if documented.docstring:
        lines += [" ".join(documented.docstring.value.split()), ""]
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    nested = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        attribute = documented.members.get(field.name)
        if attribute is None or attribute.docstring is None:
            raise ValueError(f"{cls.__module__}.{cls.__qualname__}.{field.name} has no docstring")
        hint = hints[field.name]
        lines.append(
            f"| `{field.name}` | {_type_text(hint)} | {_default_text(field)} | {_escape(attribute.docstring.value)} |"
        )
        for candidate in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(candidate):
                nested.append((candidate, f"{section}.{field.name}"))
    lines.append("")
    for candidate, name in nested:
        lines += _tables(candidate, name, loader)
    return lines


def configuration_reference() -> str:
    """Every pipeline table: `[pipeline]`, then each stage's in execution order."""
    import griffe

    from eztag.pipeline import PipelineSection
    from eztag.stages import STAGES

    loader = griffe.GriffeLoader(search_paths=[str(ROOT)])
    lines = _tables(PipelineSection, "pipeline", loader)
    for name, module in STAGES.items():
        lines += _tables(module.Config, name, loader)
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: fill the configuration page."""
    if MARKER in markdown:
        return markdown.replace(MARKER, configuration_reference())
    return markdown
