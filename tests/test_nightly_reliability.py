"""Nightly-job failures: two runs on one run directory, a full or read-only disk, SIGTERM and SIGINT mid-stage."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from eztag.artifacts import RunDir, atomic_path, differing_outputs, write_npy, write_parquet
from eztag.safe_writes import WriteFailed
from tests.conftest import REPO, cli_env, eztag, pipeline_file, run_cli
from tests.test_resume import demo_like

pytestmark = pytest.mark.xdist_group("nightly")  # one worker: the module fixture runs the pipeline once


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An undisturbed run of the demo-like pipeline, in a folder named `run` like the runs it is compared with."""
    folder = tmp_path_factory.mktemp("reference")
    run_cli("run", str(demo_like(folder, folder / "run")), cwd=REPO)
    return folder / "run"


def eztag_lines(result: subprocess.CompletedProcess[str] | str) -> list[str]:
    """stderr lines written by eztag itself (libraries may add progress bars)."""
    text = result if isinstance(result, str) else result.stderr
    return [line for line in text.splitlines() if line.startswith("eztag:")]


def start_run(pipeline: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "eztag.cli", "run", str(pipeline), *extra],
        cwd=REPO,
        env=cli_env(PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def temporary_files(run_dir: Path) -> list[Path]:
    return [path for path in run_dir.rglob("*") if path.name.endswith((".tmp", ".partial"))]


def allocated(folder: Path) -> int:
    """Bytes the files under `folder` take on disk."""
    return sum(path.stat().st_blocks * 512 for path in folder.rglob("*") if path.is_file())


# --- one run per run directory -------------------------------------------------------------------------------


def test_two_runs_on_one_run_dir_one_fails_at_once_naming_the_holder(
    tmp_path: Path, small_inputs: tuple[Path, Path]
) -> None:
    pipeline = pipeline_file(tmp_path, *small_inputs)
    first, second = start_run(pipeline), start_run(pipeline, "--set", "tag.k=2")
    results = {process.pid: (process, *process.communicate(timeout=300)) for process in (first, second)}
    codes = sorted(process.returncode for process, _, _ in results.values())
    assert codes == [0, 2], [(p.returncode, err) for p, _, err in results.values()]
    (winner, _, _), (_, _, stderr) = sorted(results.values(), key=lambda item: item[0].returncode)
    assert "Traceback" not in stderr
    (line,) = eztag_lines(stderr)
    assert line.startswith(f"eztag: error: run directory {tmp_path / 'run'} is in use by another eztag run")
    assert f"pid {winner.pid} on {socket.gethostname()} since 20" in line, line
    assert "--wait" in line
    # the directory holds exactly the winner's run, finished
    assert "up to date" in eztag("evaluate", str(pipeline), *(["--set", "tag.k=2"] if winner is second else [])).stdout


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from eztag.runlock import run_lock
    with run_lock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(300)
    """
)


@contextlib.contextmanager
def holder(run_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """A second real process holding the run directory's lock until it is killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline() == "held\n"
        yield process
    finally:
        process.kill()
        process.wait()


def test_wait_takes_the_run_dir_when_the_holder_dies_and_read_only_commands_take_no_lock(
    tmp_path: Path, small_inputs: tuple[Path, Path]
) -> None:
    pipeline = pipeline_file(tmp_path, *small_inputs)
    run_dir = tmp_path / "run"
    with holder(run_dir) as process:
        started = time.monotonic()
        refused = eztag("run", str(pipeline), "--wait", "1.5")
        assert time.monotonic() - started < 60
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert eztag_lines(refused)[-1].startswith(
            f"eztag: error: run directory {run_dir} is still in use by another eztag run (pid {process.pid} on "
        )
        assert "after waiting 1.5 s" in eztag_lines(refused)[-1]
        waiting = start_run(pipeline, "--wait")
        time.sleep(3)
        assert waiting.poll() is None, waiting.communicate()
        process.kill()  # kill -9: the kernel drops the lock, nothing stale is left
    stdout, stderr = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, stderr
    assert f"is in use (pid {process.pid} on {socket.gethostname()}" in eztag_lines(stderr)[0]
    assert "[evaluate] done" in stdout
    with holder(run_dir):
        compared = eztag("compare", str(run_dir), "--out", str(tmp_path / "compare"))
        assert compared.returncode == 0, compared.stderr
        assert "is in use" in eztag("run", str(pipeline)).stderr


# --- a full or read-only disk --------------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `folder` (root only; the test is skipped where mounts are not allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root; test_fake_disk_full_* covers the path with a fake")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=False)
    if mounted.returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs; test_fake_disk_full_* covers it with a fake")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def leave_free(ballast: Path, free: int) -> None:
    """Fill the file system with a ballast file until about `free` bytes are left."""
    ballast.unlink(missing_ok=True)
    size = shutil.disk_usage(ballast.parent).free - free
    with open(ballast, "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, size)


@pytest.mark.slow
def test_disk_full_on_a_small_tmpfs_is_one_line_error_and_the_rerun_resumes(tmp_path: Path, reference: Path) -> None:
    with small_tmpfs(tmp_path / "fs", "4m") as fs:
        run_dir = fs / "run"
        pipeline = demo_like(tmp_path / "inputs", run_dir)
        ballast = fs / "ballast"
        # 300 KB free: encode stops halfway through the 600 KB of label vectors
        leave_free(ballast, 300 * 1024)
        full = eztag("run", str(pipeline))
        assert "Traceback" not in full.stderr and full.returncode == 2, full.stderr
        (line,) = eztag_lines(full)
        assert line.startswith(f"eztag: error: stage 'encode': cannot write {run_dir / 'encode' / 'labels'}/chunk-")
        assert "No space left on device (needs 12.1 KB, " in line and line.endswith("rerun the same command to resume")
        assert not temporary_files(run_dir)
        # encode finishes, then the 588 KB label matrix of the exact index does not fit: written through a memory
        # map it was a SIGBUS (exit 135) with no message; now the space is reserved first
        rest_of_encode = allocated(reference / "encode") - allocated(run_dir / "encode")
        leave_free(ballast, rest_of_encode + 300 * 1024)
        full = eztag("run", str(pipeline))
        assert "resumed" in full.stdout and full.returncode == 2, full.stderr
        (line,) = eztag_lines(full)
        assert f"stage 'index': cannot write {run_dir / 'index' / 'labels.npy'}: No space left" in line
        assert "needs 588.1 KB" in line
        assert not temporary_files(run_dir)
        ballast.unlink()
        resumed = run_cli("run", str(pipeline), cwd=REPO)
        assert "[encode] up to date" in resumed.stdout and "[index] done" in resumed.stdout
        assert differing_outputs(run_dir, reference) == []
        # a read-only file system: the same one-line error shape
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        readonly = eztag("run", str(pipeline), "--force", "tag")
        (line,) = eztag_lines(readonly)
        assert readonly.returncode == 2 and "Traceback" not in readonly.stderr
        assert f"cannot write {run_dir}" in line and "Read-only file system" in line


def test_library_writes_on_a_full_tmpfs_raise_write_failed_naming_the_file(tmp_path: Path) -> None:
    """polars, numpy and faiss report a full disk each their own way; each becomes one WriteFailed."""
    faiss = pytest.importorskip("faiss")
    with small_tmpfs(tmp_path / "fs", "256k") as fs:
        leave_free(fs / "ballast", 16 * 1024)
        frame = pl.DataFrame({"x": np.random.default_rng(0).random(100_000)})
        with pytest.raises(WriteFailed, match=r"cannot write .*/table\.parquet: No space left on device \("):
            write_parquet(fs / "table.parquet", frame)
        with pytest.raises(WriteFailed, match=r"vectors\.npy: No space left on device \(needs 390\.8 KB, "):
            write_npy(fs / "vectors.npy", np.zeros((1000, 100), dtype=np.float32))
        index = faiss.IndexFlatIP(64)
        index.add(np.ones((2000, 64), dtype=np.float32))
        failing = pytest.raises(WriteFailed, match=r"labels\.faiss: No space left on device")
        with failing, atomic_path(fs / "labels.faiss") as tmp:
            faiss.write_index(index, str(tmp))
        assert sorted(path.name for path in fs.iterdir()) == ["ballast"]


FAKE_FULL_DISK = textwrap.dedent(
    """
    import errno, os, sys
    from eztag import cli

    real_fallocate = os.posix_fallocate

    def fake_fallocate(fd, offset, size):  # a FAKE disk with room for small files only
        if size > int(os.environ["FAKE_DISK_ROOM"]):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fallocate(fd, offset, size)

    os.posix_fallocate = fake_fallocate
    sys.exit(cli.main(sys.argv[1:]))
    """
)


def test_fake_disk_full_write_hook_then_resume(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    """A FAKE full disk (posix_fallocate raising ENOSPC for files over 5000 bytes), for machines where the test
    cannot mount a small tmpfs: the 6 KB label matrix of the index does not fit, the encode chunks (3 KB) do."""
    pipeline = pipeline_file(tmp_path, *small_inputs)
    command = [sys.executable, "-c", FAKE_FULL_DISK, "run", str(pipeline)]
    env = cli_env(FAKE_DISK_ROOM="5000")
    full = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr
    (line,) = eztag_lines(full)
    assert f"stage 'index': cannot write {tmp_path / 'run' / 'index' / 'labels.npy'}: No space left" in line
    assert "(needs 6.1 KB, " in line
    assert not temporary_files(tmp_path / "run")
    resumed = run_cli("run", str(pipeline), cwd=REPO)
    assert "[encode] up to date" in resumed.stdout and "[evaluate] done" in resumed.stdout


# --- SIGTERM and SIGINT --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("number", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_signal_mid_encode_then_resume_is_byte_equal(
    tmp_path: Path, reference: Path, number: signal.Signals, status: int
) -> None:
    run_dir = tmp_path / "run"
    pipeline = demo_like(tmp_path / "inputs", run_dir)
    process = start_run(pipeline)
    third_chunk = run_dir / "encode" / "labels" / "chunk-00003.npy"
    deadline = time.monotonic() + 300
    while not third_chunk.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(number)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    (line,) = eztag_lines(stderr)
    assert line.startswith("eztag: interrupted in encode after ")
    assert line.endswith(f" of 49 chunks (encode labels) by {number.name}; rerun the same command to resume"), line
    assert not temporary_files(run_dir)
    assert list(RunDir(run_dir).manifest()["stages"]) == ["ingest"]
    resumed = run_cli("run", str(pipeline), cwd=REPO)
    assert "encode labels: resumed, " in resumed.stdout
    assert differing_outputs(run_dir, reference) == []


def test_write_errno_reads_library_messages() -> None:
    from eztag.safe_writes import write_errno

    assert write_errno(OSError(errno.EDQUOT, "quota")) == errno.EDQUOT
    assert write_errno(RuntimeError("write error in x.faiss: 1 != 2 (No space left on device)")) == errno.ENOSPC
    assert write_errno(ValueError("Read-only file system (os error 30)")) == errno.EROFS
    assert write_errno(OSError(errno.ENOENT, "missing")) is None
    assert write_errno(ValueError("bad value")) is None


def test_taking_the_lock_removes_a_killed_runs_temporaries_but_not_the_shared_caches(tmp_path: Path) -> None:
    """A SIGKILL leaves `atomic_path` / `atomic_dir` temporaries; the next lock holder removes them before any
    stage runs (found by the soak: a run stopped early left a killed run's temporary behind)."""
    from eztag.runlock import run_lock

    run = tmp_path / "run"
    stale = [run / "tag" / "shards" / ".part-00000.parquet.x1y2.tmp", run / "encode" / ".labels.partial" / "a.npy"]
    kept = [run / "cache" / "judge" / ".part-1.parquet.z9.tmp", run / "tag" / "tags.parquet"]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    with run_lock(run):
        assert not stale[0].exists() and not stale[1].parent.exists()
        assert all(path.exists() for path in kept)


def test_a_stop_signal_landing_in_a_finalizer_is_not_lost(capfd: pytest.CaptureFixture[str]) -> None:
    """Python swallows an exception raised inside `__del__`; a SIGTERM whose handler runs there must still stop the
    run at the next checkpoint, without a traceback (found by the soak: a run exited 0 after a SIGTERM)."""
    from eztag import runstate

    class SignalledWhileCollected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs here, inside the finalizer

    previous = runstate.handle_stop_signals()
    try:
        SignalledWhileCollected()  # collected at once: the finalizer runs and swallows Interrupted
        with pytest.raises(runstate.Interrupted) as stopped:
            runstate.progress(1, 2, "chunks")
        assert stopped.value.signum == signal.SIGTERM
        runstate.check_stop()  # raised once, not again
    finally:
        runstate.restore_stop_signals(previous, process_ends=False)
    assert "Exception ignored" not in capfd.readouterr().err
