"""Backends by name: one small registry per kind (encoder, index, judge) with typed keyword options.

A registry maps a backend name to "module:Class"; the module is imported only when the backend is used, so an
optional heavy dependency (vllm, faiss) costs nothing until then. A backend's options are the keyword-only
parameters of its constructor, typed by their annotations: an unknown option is a one-line error with a
"did you mean", a wrong type names the option, and `device`/`precision` are checked as in `eztag.devices`. Backend
modules import torch with `lazy_module`, so checking a configuration (which reads a constructor's signature) does
not load it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import typing
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any, Generic, TypeVar

from eztag.config import coerce
from eztag.devices import check_device, check_precision
from eztag.errors import EztagError, did_you_mean

T = TypeVar("T")


def lazy_module(name: str) -> ModuleType:
    """Module `name`, executed on its first attribute access (the standard library's `LazyLoader`)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named '{name}'", name=name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Registry(Generic[T]):
    """The backends of one kind: `kind` names it in errors, `entries` maps names to "module:Class"."""

    def __init__(self, kind: str, entries: Mapping[str, str]) -> None:
        self.kind = kind
        self.entries = dict(entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def get(self, name: str, *, field: str | None = None) -> type[T]:
        """The backend class registered as `name` (its module imported now)."""
        if name not in self.entries:
            raise EztagError(f"unknown {self.kind} backend '{name}'{did_you_mean(name, self.entries)}", field=field)
        module_name, class_name = self.entries[name].split(":")
        backend: type[T] = getattr(importlib.import_module(module_name), class_name)
        return backend

    def check_options(self, name: str, options: Mapping[str, Any], *, field: str) -> dict[str, Any]:
        """`options` checked against the keyword-only parameters of backend `name`'s constructor."""
        backend = self.get(name)
        parameters = {
            key: parameter
            for key, parameter in inspect.signature(backend).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        }
        hints = typing.get_type_hints(backend.__init__)
        checked = {}
        for key, value in options.items():
            where = f"{field}.{key}"
            if key not in parameters:
                raise EztagError(
                    f"unknown option '{key}' for {self.kind} backend '{name}'{did_you_mean(key, parameters)}",
                    field=field,
                )
            checked[key] = coerce(value, hints.get(key, Any), where)
            if key == "device":
                check_device(value, field=where)
            elif key == "precision":
                check_precision(value, field=where)
        return checked

    def create(self, name: str, *args: Any, options: Mapping[str, Any], field: str) -> T:
        """An instance of backend `name` built with `args` and the checked keyword `options` of `[FIELD]`."""
        self.get(name, field=f"{field}.backend")
        return self.construct(name, *args, **self.check_options(name, options, field=field))

    def construct(self, name: str, *args: Any, **checked_options: Any) -> T:
        """An instance of backend `name` built with `args` and options already checked by `check_options`."""
        backend: Any = self.get(name)
        instance: T = backend(*args, **checked_options)
        return instance
