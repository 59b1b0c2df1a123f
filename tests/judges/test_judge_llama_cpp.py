"""The openai backend against llama.cpp's own OpenAI-compatible server (`python -m llama_cpp.server`, from
llama-cpp-python), serving the packaged SmolLM2-135M-Instruct GGUF on loopback.

Needs the `llamacpp` extra (a source build of llama.cpp, about 9 minutes on 2 cores); without it these tests are
skipped, with that reason. llama.cpp runs the Q4_1 weights quantised (and its activations in 8 bits) while
transformers de-quantises them to float32, so the two P(yes) agree closely (within 0.1 per pair, 0.04 on average)
but not to 1e-4.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from scipy.stats import spearmanr

from eztag.judges.openai import OpenAIJudge
from eztag.judges.transformers import TransformersJudge
from eztag.models import resolve_judge
from eztag.prompts import PromptTemplate
from eztag.servers import free_port, serving
from tests.support.judge_pairs import PAIRS

pytest.importorskip("llama_cpp.server.app", reason="needs llama.cpp's server: pip install -e '.[llamacpp]'")

TEMPLATE = PromptTemplate.named("yes-no", domain="software package")


@contextlib.contextmanager
def llama_server(log_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """llama.cpp's server on a free loopback port, its output in `log_path`; yields (base URL, process)."""
    directory, gguf_file = resolve_judge("default")
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(Path(directory) / gguf_file)]
    command += ["--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024"]
    url = f"http://127.0.0.1:{port}/v1"
    with serving(command, url, log_path) as process:
        yield url, process


def client(url: str, tokenizer_dir: Path, **options: object) -> OpenAIJudge:
    settings = {"tokenizer": str(tokenizer_dir), "top_logprobs": 100, "concurrency": 2, "timeout": 30.0}
    settings.update(options)
    return OpenAIJudge("smollm2", TEMPLATE, base_url=url, **settings)


@pytest.mark.slow
def test_llama_cpp_scores_agree_with_transformers(tmp_path: Path, smollm2_tokenizer_dir: Path) -> None:
    with llama_server(tmp_path / "server.log") as (url, _):
        served = client(url, smollm2_tokenizer_dir).score(PAIRS)
    local = TransformersJudge("default", TEMPLATE, device="cpu").score(PAIRS)
    assert [judgment.failure for judgment in served] == [None] * len(PAIRS)
    served_log_odds = [judgment.log_odds for judgment in served]
    local_log_odds = [judgment.log_odds for judgment in local]
    assert len(set(served_log_odds)) > len(PAIRS) // 2  # the scores depend on the pair
    # measured: max 0.068, mean 0.02, Spearman 0.85; the same prompt without the chat template differs by 0.40
    differences = [abs(a.score - b.score) for a, b in zip(served, local, strict=True)]
    assert max(differences) < 0.1 and sum(differences) / len(differences) < 0.04
    assert spearmanr(served_log_odds, local_log_odds).statistic > 0.7


@pytest.mark.slow
def test_llama_cpp_server_killed_mid_run_gives_failures_not_scores(tmp_path: Path, smollm2_tokenizer_dir: Path) -> None:
    with llama_server(tmp_path / "server.log") as (url, process):
        judge = client(url, smollm2_tokenizer_dir, concurrency=1, max_attempts=2, backoff=0.01, timeout=5.0)
        before = judge.score(PAIRS[:2])
        process.kill()
        process.wait()
        after = judge.score(PAIRS[2:4])
    assert [judgment.failure for judgment in before] == [None, None]
    assert all(judgment.score is None and judgment.failure.startswith("connection") for judgment in after)
