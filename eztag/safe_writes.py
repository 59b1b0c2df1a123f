"""Write failures (disk full, quota, read-only, permission) as one-line errors, and `.npy` files written with
their space reserved first: a full disk fails at the start of the file with the size it needs, never later with a
SIGBUS from a memory-mapped write past the end of free space."""

from __future__ import annotations

import errno
import io
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from eztag import runstate
from eztag.errors import EztagError

WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)
ADVICE = {
    errno.ENOSPC: "free space, then rerun the same command to resume",
    errno.EDQUOT: "free space within your quota, then rerun the same command to resume",
    errno.EROFS: "make the run directory writable, then rerun the same command to resume",
    errno.EACCES: "make the run directory writable, then rerun the same command to resume",
}
ROWS_PER_WRITE = 65_536


class NoSpace(OSError):
    """ENOSPC from reserving `needed` bytes for a file."""

    def __init__(self, needed: int) -> None:
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.needed = needed


def write_errno(error: BaseException) -> int | None:
    """The errno (ENOSPC, EDQUOT, EROFS or EACCES) behind a failed write, also when a library (polars, faiss,
    safetensors) reports it only in its message; None for any other error."""
    if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
        return error.errno
    text = str(error)
    return next((code for code in WRITE_ERRNOS if os.strerror(code) in text), None)


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


def _free(path: Path) -> int | None:
    """Free bytes on the file system holding `path` (its nearest existing parent)."""
    for folder in (path, *path.parents):
        if folder.exists():
            return shutil.disk_usage(folder).free
    return None


class WriteFailed(EztagError):
    """A write failed (or, `writing` False, a file operation outside eztag's own writes, such as a library's cache);
    the message names the stage, the file and, where known, the space."""

    def __init__(self, path: str | Path | None, code: int, needed: int | None = None, *, writing: bool = True) -> None:
        where = f"stage '{runstate.stage()}': " if runstate.stage() else ""
        name = f" {path}" if path else ""
        target = f"cannot write{name}" if writing else f"cannot use{name}"
        space = ""
        if code in (errno.ENOSPC, errno.EDQUOT) and path:
            free = _free(Path(path))
            needs = f"needs {_size(needed)}, " if needed is not None else ""
            space = f" ({needs}{_size(free)} free)" if free is not None else ""
        advice = ADVICE[code] if writing else "check its permissions, then rerun the same command"
        super().__init__(f"{where}{target}: {os.strerror(code)}{space}; {advice}")
        self.code = code


def check_write_error(error: BaseException, path: Path) -> None:
    """Raise `WriteFailed` for `path` when `error` is a failed write; return for any other error."""
    code = write_errno(error)
    if code is not None and not isinstance(error, WriteFailed):
        raise WriteFailed(path, code, getattr(error, "needed", None)) from error


def reserve(handle: BinaryIO, size: int) -> None:
    """Allocate `size` bytes for the file open in `handle`, or raise `NoSpace` (file systems without
    fallocate are left to fail on the write itself)."""
    try:
        os.posix_fallocate(handle.fileno(), 0, size)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise NoSpace(size) from None
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise


def write_npy_rows(handle: BinaryIO, parts: Iterable[np.ndarray], shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Write a C-ordered `.npy` of `shape` whose rows are those of `parts` in order, through ordinary writes,
    with the whole size reserved first; the bytes equal `np.save` of the concatenated array."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    )
    reserve(handle, len(header.getvalue()) + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    handle.write(header.getvalue())
    for part in parts:
        for start in range(0, len(part), ROWS_PER_WRITE):
            handle.write(np.ascontiguousarray(part[start : start + ROWS_PER_WRITE], dtype=dtype).data)
