"""One run per run directory: an exclusive `flock` on RUN_DIR/.eztag.lock, held for the whole run.

The kernel drops the lock when its process ends, however it ends, so a kill -9 leaves no stale lock. The holder
writes its pid, host and start time into the file, for the message a second run prints. `file_lock` is the same
lock on any file (a shared cache entry being built), without the holder's record."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from eztag.artifacts import remove_stale_temporaries
from eztag.errors import EztagError
from eztag.safe_writes import check_write_error

log = logging.getLogger(__name__)

LOCK_FILE = ".eztag.lock"
POLL_SECONDS = 0.2


def _holder(fd: int) -> str:
    """'pid N on HOST since TIME' from the lock file (given a second to appear: a holder writes it right after
    taking the lock), or a note that the holder has not written it."""
    for _ in range(20):
        try:
            data = json.loads(os.pread(fd, 4096, 0).decode())
            return f"pid {data['pid']} on {data['host']} since {data['started']}"
        except (ValueError, KeyError, UnicodeDecodeError):
            time.sleep(0.05)
    return "a process that has not recorded itself"


def _try_lock(fd: int, mode: int = fcntl.LOCK_EX) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def run_lock(run_dir: Path, wait: float | None = None) -> Iterator[None]:
    """Hold the run directory's lock. Held elsewhere: fail at once (`wait` None), wait up to `wait` seconds, or
    without limit (`wait` < 0); the error names the directory and the holder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            holder = _holder(fd)
            if wait is None:
                raise EztagError(
                    f"run directory {run_dir} is in use by another eztag run ({holder}); "
                    "wait for it to finish, or pass --wait [SECONDS]"
                )
            limit = "" if wait < 0 else f" (up to {wait:g} s)"
            log.warning(f"eztag: run directory {run_dir} is in use ({holder}); waiting{limit}")
            deadline = None if wait < 0 else time.monotonic() + wait
            while not _try_lock(fd):
                if deadline is not None and time.monotonic() >= deadline:
                    raise EztagError(
                        f"run directory {run_dir} is still in use by another eztag run ({_holder(fd)}) "
                        f"after waiting {wait:g} s"
                    )
                time.sleep(POLL_SECONDS)
        remove_stale_temporaries(run_dir)  # the lock is ours: any temporary left is a killed run's
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError as error:
            check_write_error(error, run_dir / LOCK_FILE)
            raise
        yield
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold an exclusive (or `shared`) `flock` on `path` (created if missing), waiting for as long as another process
    holds it in a mode that excludes this one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        if not _try_lock(fd, mode):
            log.warning(f"eztag: {path} is held by another eztag process; waiting for it")
            fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)
