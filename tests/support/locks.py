"""A lock held by another process, and an eztag command that must wait for it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env

HOLD = """
import sys, time
from pathlib import Path
from eztag.runlock import file_lock
with file_lock(Path(sys.argv[1]), shared=sys.argv[2] == "shared"):
    print("held", flush=True)
    time.sleep(600)
"""


def folders(parent: Path) -> list[str]:
    """The names of the folders in `parent`."""
    return sorted(path.name for path in parent.iterdir() if path.is_dir())


def waited_for(lock: Path, holding: str, command: list[str], while_held: Callable[[], object] = lambda: None) -> str:
    """Run `eztag COMMAND` while another process holds `lock` (`holding`: shared or exclusive; a real `flock`): it
    must say it waits, stay waiting and leave the folders beside the lock as they were; then `while_held()`, the
    holder is killed (the kernel drops its lock) and COMMAND must finish. Its stdout."""
    before = folders(lock.parent)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock), holding], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        waiting = subprocess.Popen(
            [sys.executable, "-m", "eztag.cli", *command],
            cwd=REPO,
            env=cli_env(PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert waiting.stderr is not None
        for line in waiting.stderr:
            if "held by another eztag process; waiting for it" in line:
                break
        else:
            pytest.fail(f"eztag {command[0]} never waited for the lock (exit {waiting.wait()})")
        time.sleep(1)
        assert waiting.poll() is None, f"eztag {command[0]} went on while the lock was held"
        assert folders(lock.parent) == before
        while_held()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    return out
