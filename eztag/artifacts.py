"""The run directory: atomic writes, checksums and the JSON manifest that records finished stages."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from eztag.errors import EztagError
from eztag.safe_writes import check_write_error, write_npy_rows

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STAGE_HASH_FILE = ".config_hash"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed over `path`.

    The file gets the mode a plain `open` would give it (0666 less the umask), not mkstemp's 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except Exception as error:
        check_write_error(error, path)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, keys sorted so equal data gives equal bytes."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_parquet(path: Path, frame: pl.DataFrame) -> None:
    """Write a Parquet file atomically."""
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp, compression="zstd", statistics=True)


def remove_stale_temporaries(run_dir: Path, keep: str = "cache") -> list[Path]:
    """Remove the temporaries (`atomic_path`'s `.NAME.*.tmp`, `atomic_dir`'s `.NAME.partial`) a killed run left in
    `run_dir`; call it holding the run's lock, so no writer is alive. The `keep` folder is left alone: caches may be
    shared with other runs, and their temporaries are never read. Returns what was removed."""
    removed = []
    for path in sorted(Path(run_dir).rglob(".*"), reverse=True):
        if path.relative_to(run_dir).parts[0] == keep:
            continue
        if path.is_file() and path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)
        elif path.is_dir() and path.name.endswith(".partial"):
            shutil.rmtree(path, ignore_errors=True)
        else:
            continue
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces `path`."""
    tmp = path.parent / f".{path.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except Exception as error:
        check_write_error(error, path)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cache_location(configured: str | None, stage_dir: Path, name: str, field: str) -> Path:
    """The shared folder `configured` (its setting named by `field`), or RUN_DIR/cache/NAME: beside the stage folder,
    so a config change (which empties the stage folder) keeps every cached result paid for; the cache keys hold
    everything that changes a result."""
    return shared_folder(configured, field) if configured else stage_dir.parent / "cache" / name


def shared_folder(configured: str, field: str) -> Path:
    """The folder of a cache shared between runs (`field` names its setting), created if missing; a one-line error
    when a file is in its place."""
    path = Path(configured)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise EztagError(f"{path} is not a folder: it must be one, or a path eztag can create", field=field) from None
    return path


def copy_files(source: Path, target: Path) -> None:
    """Copy every file of the folder `source` into `target`, each atomically (a killed copy resumes file by file).

    A copy, not a link: the run directory's checksums then guard the run's own bytes, and a rebuilt run never
    inherits damage done later to a file in a shared cache."""
    for path in sorted(source.iterdir()):
        destination = target / path.name
        if not destination.exists():
            with atomic_path(destination) as tmp:
                shutil.copyfile(path, tmp)


def read_shards(directory: Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Every `part-*.parquet` shard of a cache folder, concatenated (an empty frame of `schema` when none)."""
    shards = sorted(directory.glob("part-*.parquet"))
    return pl.concat([pl.read_parquet(path) for path in shards]) if shards else pl.DataFrame(schema=schema)


def write_shard(directory: Path, frame: pl.DataFrame) -> None:
    """Add `frame` to a cache folder as a new shard, atomically."""
    write_parquet(directory / f"part-{uuid.uuid4().hex}.parquet", frame)


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write a `.npy` array atomically, its space reserved first."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write_npy_rows(handle, [array], array.shape, array.dtype)


def file_checksum(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def digest_frame(items: Iterable[bytes]) -> pl.DataFrame:
    """One row per item: its 16-byte BLAKE2b `digest` (how the caches recognise texts and vectors they hold)."""
    digests = [hashlib.blake2b(item, digest_size=16).digest() for item in items]
    return pl.DataFrame({"digest": digests}, schema={"digest": pl.Binary})


def config_hash(data: Any) -> str:
    """A short, stable hash of JSON-serialisable configuration."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class RunDir:
    """A pipeline's run directory: one sub-directory per stage and a manifest of finished stages."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for path in self.root.glob(f".{MANIFEST}.*.tmp"):
            path.unlink(missing_ok=True)

    def stage_dir(self, stage: str) -> Path:
        """The directory a stage writes into."""
        return self.root / stage

    def manifest(self) -> dict[str, Any]:
        """The manifest's contents (empty when no stage has finished yet)."""
        path = self.root / MANIFEST
        if not path.exists():
            return {"stages": {}}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise EztagError("corrupt manifest; delete it to rebuild every stage", file=path) from None

    def stage_config(self, stage: str) -> dict[str, Any]:
        """The config a finished stage ran with, as recorded in the manifest."""
        record = self.manifest()["stages"].get(stage)
        if record is None:
            raise EztagError(f"stage '{stage}' has not finished in this run directory", file=self.root / MANIFEST)
        return record["config"]

    def is_finished(self, stage: str, stage_hash: str) -> bool:
        """True when `stage` finished with this config hash and its outputs are intact."""
        record = self.manifest()["stages"].get(stage)
        if record is None or record["config_hash"] != stage_hash:
            return False
        stage_dir = self.stage_dir(stage)
        for name, checksum in record["outputs"].items():
            path = stage_dir / name
            if not path.is_file() or file_checksum(path) != checksum:
                return False
        return True

    def begin(self, stage: str, stage_hash: str, *, fresh: bool = False) -> Path:
        """Prepare a stage's directory: keep intact partial work of the same config, wipe work of another (or
        all of it when `fresh`: a forced stage recomputes everything)."""
        stage_dir = self.stage_dir(stage)
        hash_file = stage_dir / STAGE_HASH_FILE
        stale = not hash_file.exists() or hash_file.read_text().strip() != stage_hash
        if stage_dir.exists() and (fresh or stale):
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        self._discard_untrusted(stage)
        if not hash_file.exists():
            write_text(hash_file, stage_hash)
        self._forget(stage)
        return stage_dir

    def finish(self, stage: str, stage_hash: str, config: dict[str, Any], seconds: float) -> None:
        """Record a finished stage with the checksums of every file it wrote."""
        stage_dir = self.stage_dir(stage)
        outputs = {
            str(path.relative_to(stage_dir)): file_checksum(path)
            for path in sorted(stage_dir.rglob("*"))
            if path.is_file() and not path.name.startswith(".")
        }
        manifest = self.manifest()
        manifest["stages"][stage] = {
            "config_hash": stage_hash,
            "config": config,
            "outputs": outputs,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(seconds, 3),
        }
        write_json(self.root / MANIFEST, manifest)

    def adopt(self, stage: str, source: RunDir) -> None:
        """Take `stage` as finished in `source` (another run directory, the same config hash): its files hard-linked
        (copied across file systems; every eztag write replaces a file, never changes one in place) and its manifest
        record."""
        target = self.stage_dir(stage)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source.stage_dir(stage), target, copy_function=_link_or_copy)
        manifest = self.manifest()
        manifest["stages"][stage] = source.manifest()["stages"][stage]
        write_json(self.root / MANIFEST, manifest)

    def _discard_untrusted(self, stage: str) -> None:
        """Delete temporary files left by a killed write and outputs that no longer match the manifest."""
        stage_dir = self.stage_dir(stage)
        for path in stage_dir.rglob(".*.tmp"):
            path.unlink(missing_ok=True)
        record = self.manifest()["stages"].get(stage)
        for name, checksum in (record["outputs"] if record else {}).items():
            path = stage_dir / name
            if path.is_file() and file_checksum(path) != checksum:
                log.warning(f"[{stage}] {name} does not match its checksum in the manifest; rebuilding it")
                path.unlink()

    def _forget(self, stage: str) -> None:
        manifest = self.manifest()
        if manifest["stages"].pop(stage, None) is not None:
            write_json(self.root / MANIFEST, manifest)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def without_timings(data: Any) -> Any:
    """JSON data without the wall-clock times (keys ending in "seconds") that differ from run to run."""
    if isinstance(data, dict):
        return {key: without_timings(value) for key, value in data.items() if not key.endswith("seconds")}
    return data


def differing_outputs(run_dir: Path, reference: Path) -> list[str]:
    """Output files (stage/name, from the manifests' checksums) that differ between two finished runs; a JSON file
    that differs only in its timings counts as equal."""
    digests = [
        {
            f"{stage}/{name}": digest
            for stage, record in RunDir(root).manifest()["stages"].items()
            for name, digest in record["outputs"].items()
        }
        for root in (run_dir, reference)
    ]
    differ = []
    for name in sorted(digests[0].keys() | digests[1].keys()):
        if digests[0].get(name) == digests[1].get(name):
            continue
        if name.endswith(".json") and name in digests[0] and name in digests[1]:
            got, want = (without_timings(json.loads((root / name).read_text())) for root in (run_dir, reference))
            if got == want:
                continue
        differ.append(name)
    return differ
