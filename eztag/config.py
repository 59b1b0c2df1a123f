"""Typed configuration: dataclasses per stage, read from TOML with every key and type checked."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from eztag.errors import EztagError, did_you_mean


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` (int, float, str, bool, list[...], Optional, Literal)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, where)
            except EztagError as error:
                errors.append(error)
        raise errors[0]
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise EztagError(f"{value!r} is not allowed{did_you_mean(str(value), map(str, allowed))}", field=where)
        return value
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise EztagError(f"expected a list, got {type(value).__name__} {value!r}", field=where)
        return [coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value, section=where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Any:
        return value
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise EztagError(f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}", field=where)
    return value


def from_dict(cls: Any, data: dict[str, Any], *, section: str, file: str | Path | None = None) -> Any:
    """Build dataclass `cls` from a TOML table, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        if key not in fields:
            raise EztagError(f"unknown key '{key}'{did_you_mean(key, fields)}", file=file, field=f"[{section}]")
        try:
            values[key] = coerce(value, hints[key], f"{section}.{key}")
        except EztagError as error:
            raise EztagError(error.message, file=file, field=error.field) from None
    missing = [
        name
        for name, field in fields.items()
        if name not in values and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise EztagError(f"missing required key '{missing[0]}'", file=file, field=f"[{section}]")
    try:
        return cls(**values)
    except EztagError as error:
        raise EztagError(error.message, file=file, field=error.field or f"[{section}]") from None
    except ValueError as error:
        raise EztagError(str(error), file=file, field=f"[{section}]") from None


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a plain dict (for hashing and the manifest)."""
    return dataclasses.asdict(config)


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file with a one-line error for syntax problems."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise EztagError("file not found", file=path) from None
    except IsADirectoryError:
        raise EztagError("is a directory, expected a file", file=path) from None
    except OSError as error:
        raise EztagError(f"cannot read: {error.strerror}", file=path) from None
    except UnicodeDecodeError as error:
        raise EztagError(f"invalid TOML: invalid UTF-8 at byte {error.start}", file=path) from None
    except tomllib.TOMLDecodeError as error:
        raise EztagError(f"invalid TOML: {error}", file=path) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (value in TOML syntax; bare words are strings); a longer dotted name sets a
    key of a nested table (`tag.conse.top=3`, `judge.options.max_model_len=1024`), creating the tables it lacks."""
    for item in overrides:
        name, sep, raw = item.partition("=")
        section, *keys = name.strip().split(".")
        if not sep or not keys or not all([section, *keys]):
            raise EztagError(f"override '{item}' is not of the form section.key=value", field="--set")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        table, path = data, []
        for key in [section, *keys[:-1]]:
            path.append(key)
            table = table.setdefault(key, {})
            if not isinstance(table, dict):
                raise EztagError(f"'{'.'.join(path)}' is not a table, cannot set '{keys[-1]}'", field="--set")
        table[keys[-1]] = value
    return data
