"""Local OpenAI-compatible servers (vLLM, llama.cpp) on loopback, for the `openai` judge backend: a free port, a
server process group started and waited for, and killed with its workers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A free loopback port: the one the kernel picks for port 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(
    command: list[str], url: str, log_path: Path, *, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.Popen[bytes]:
    """Start `command` in its own process group, output appended to `log_path`; return once `url`/models answers."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                kill(process)
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{command[:3]} did not start:\n{tail}") from None
            time.sleep(0.5)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server's whole process group (its engine workers too) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def serving(
    command: list[str], url: str, log_path: Path, *, env: dict[str, str] | None = None, timeout: float = 120
) -> Iterator[subprocess.Popen[bytes]]:
    """`start_server`, killed on exit."""
    process = start_server(command, url, log_path, env=env, timeout=timeout)
    try:
        yield process
    finally:
        kill(process)
