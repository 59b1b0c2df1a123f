"""User-facing errors: one line that names the file, row and field at fault."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class EztagError(Exception):
    """An error caused by the user's input or configuration, shown as one line without a traceback."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = None if file is None else str(file)
        self.row = row
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return f"{': '.join(where)}: {self.message}" if where else self.message


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix for a misspelt name, or the list of valid names."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (expected one of: {', '.join(choices)})" if choices else ""


def missing_extra(package: str, extra: str) -> EztagError:
    """The one-line error for an optional dependency that is not installed."""
    return EztagError(f"{package} is not installed; install it with: pip install 'eztag[{extra}]'")
