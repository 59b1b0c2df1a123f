"""Caches of whole entries shared between runs (`[encode] label_cache`, `[index] cache`) and their pruning.

A run uses such a folder under its shared lock (`FOLDER/.eztag-cache.lock`; runs never wait for one another there)
and sets the modification time of each entry it takes; `prune` takes the lock exclusively, so it waits for the runs
using the folder and they wait for it, and removes the entries no run has used for a given time. A folder is marked
(`FOLDER/.eztag-cache`) the first time a run uses it, and `prune` touches no folder without that mark."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from eztag.artifacts import shared_folder
from eztag.errors import EztagError
from eztag.runlock import file_lock

MARK = ".eztag-cache"
LOCK = ".eztag-cache.lock"
DAY_SECONDS = 86_400


@contextlib.contextmanager
def using(configured: str, field: str) -> Iterator[Path]:
    """The cache folder `configured` (its setting named by `field`; created and marked if missing), held under its
    shared lock."""
    folder = shared_folder(configured, field)
    (folder / MARK).touch()
    with file_lock(folder / LOCK, shared=True):
        yield folder


def entry_lock(entry: Path) -> Path:
    """The lock file of the cache entry `entry`, held by the one run that builds it."""
    return entry.parent / f".{entry.name}.lock"


def companions(entry: Path) -> list[Path]:
    """The files that go with the cache entry `entry`: its lock file and the files named `KEY.*` beside it (a label
    entry's digest files, an index entry's slot file)."""
    return [*entry.parent.glob(f"{entry.name}.*"), entry_lock(entry)]


def mark_used(*entries: Path) -> None:
    """Set the entries' modification time to now: the time `prune` goes by."""
    for entry in entries:
        os.utime(entry)


@dataclasses.dataclass
class Pruned:
    """What `prune` removed from one folder: entry names and their bytes, and how many entries it kept."""

    removed: list[str]
    freed_bytes: int
    kept: int


def prune(folder: Path, unused_days: float) -> Pruned:
    """Remove the entries of the cache `folder` no run has used for `unused_days` days with their companion files,
    and a killed run's partial work likewise, once no run uses the folder."""
    if not (folder / MARK).is_file():
        raise EztagError(f"{folder} is not a cache folder of eztag (no {MARK} file in it); nothing was removed")
    cutoff = time.time() - unused_days * DAY_SECONDS
    removed, freed, kept = [], 0, 0
    with file_lock(folder / LOCK):
        for entry in sorted(path for path in folder.iterdir() if path.is_dir()):
            if entry.stat().st_mtime >= cutoff:
                kept += 1
                continue
            files = companions(entry)
            gone = folder / f".{entry.name}.pruned"
            freed += sum(path.stat().st_size for path in [*entry.rglob("*"), *files] if path.is_file())
            entry.rename(gone)  # the entry disappears whole, then its files go
            for path in files:
                path.unlink(missing_ok=True)
            shutil.rmtree(gone)
            removed.append(entry.name)
    return Pruned(removed, freed, kept)
