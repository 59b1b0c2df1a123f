"""The openai backend against a real HTTP server on loopback: a small OpenAI-completions-compatible server written
for the tests (tests/support/openai_server.py), serving log-probabilities of a tiny random Llama, with injected
faults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from eztag.judges.openai import OpenAIJudge
from eztag.judges.transformers import TransformersJudge
from eztag.pipeline import Pipeline
from eztag.prompts import Pair, PromptTemplate
from tests.conftest import pipeline_file
from tests.support.openai_server import CompletionsServer
from tests.support.reliability import TALLY

TEMPLATE = PromptTemplate.named("yes-no", domain="software package")
PAIRS = [
    Pair(document, label, description)
    for document in ("A media player for audio and video files", "Chess game with a graphical board")
    for label, description in (("Audio", "Media"), ("Video", "Media"), ("Games", "Use"))
]


@pytest.fixture(scope="module")
def tiny_judge(tiny_llama_dir: Path) -> TransformersJudge:
    return TransformersJudge(str(tiny_llama_dir), TEMPLATE, device="cpu", batch_size=4)


@pytest.fixture
def server(tiny_judge: TransformersJudge) -> Iterator[CompletionsServer]:
    server = CompletionsServer(tiny_judge, sleep_seconds=4.0).start()
    yield server
    server.stop()
    TALLY["server_faults"] += server.faults_served


def client(server: CompletionsServer, tiny_llama_dir: Path, **options: object) -> OpenAIJudge:
    """An OpenAIJudge asking for every token's log-probability, so P(yes) sums all yes/no spellings."""
    settings = {"concurrency": 3, "timeout": 3.0, "max_attempts": 3, "backoff": 0.01, "max_backoff": 0.05}
    settings.update(options)
    return OpenAIJudge(
        "tiny", TEMPLATE, base_url=server.url, tokenizer=str(tiny_llama_dir), top_logprobs=49152, **settings
    )


def test_transient_faults_are_retried_and_scores_equal_transformers(
    server: CompletionsServer, tiny_judge: TransformersJudge, tiny_llama_dir: Path
) -> None:
    faults = ["500", "429", "503", "malformed", "no_logprobs", "reset", "close", "sleep"]
    server.faults = list(faults)
    judgments = client(server, tiny_llama_dir, max_attempts=len(faults) + 1).score(PAIRS)
    expected = tiny_judge.score(PAIRS)
    assert server.faults == []
    assert server.requests == len(PAIRS) + len(faults)
    assert [judgment.failure for judgment in judgments] == [None] * len(PAIRS)
    for judgment, reference in zip(judgments, expected, strict=True):
        assert judgment.score == pytest.approx(reference.score, abs=1e-5)
        assert judgment.log_odds == pytest.approx(reference.log_odds, abs=1e-4)


def test_lasting_faults_are_failures_never_scores(server: CompletionsServer, tiny_llama_dir: Path) -> None:
    server.faults_by_text = {  # the first text a prompt contains picks its fault
        "Chess game with a graphical board\n\nTag: Games": "400",
        "Tag: Audio": "503",
        "Tag: Video": "malformed",
        "Tag: Games": "sleep",
    }
    judgments = client(server, tiny_llama_dir).score(PAIRS)
    reasons = [judgment.failure for judgment in judgments]
    assert all(judgment.score is None and judgment.log_odds is None for judgment in judgments)
    assert reasons[0].startswith("http_503") and reasons[0].endswith("(after 3 attempts)")
    assert reasons[1].startswith("malformed_json")
    assert reasons[2].startswith("timeout")
    assert reasons[3].startswith("http_503") and reasons[4].startswith("malformed_json")
    assert reasons[5] == "http_400: Bad Request (not retried)"


def test_server_dying_mid_run(server: CompletionsServer, tiny_judge: TransformersJudge, tiny_llama_dir: Path) -> None:
    server.answer_limit = 3
    judgments = client(server, tiny_llama_dir, concurrency=1, max_attempts=2).score(PAIRS)
    expected = tiny_judge.score(PAIRS)
    for judgment, reference in zip(judgments[:3], expected[:3], strict=True):
        assert judgment.failure is None
        assert judgment.score == pytest.approx(reference.score, abs=1e-5)
    for judgment in judgments[3:]:
        assert judgment.score is None and judgment.failure.startswith("connection")


@pytest.mark.slow
def test_judge_stage_records_failures_and_retries_them_on_rerun(
    tmp_path: Path, server: CompletionsServer, tiny_llama_dir: Path, small_inputs: tuple[Path, Path]
) -> None:
    server.faults_by_text = {"Tag: Video": "500"}
    extra = (
        '[mine]\nk = 2\n[judge]\nbackend = "openai"\nmodel = "tiny"\ndomain = "software package"\n'
        f'[judge.options]\nbase_url = "{server.url}"\ntokenizer = "{tiny_llama_dir}"\ntop_logprobs = 49152\n'
        "timeout = 10.0\nmax_attempts = 2\nbackoff = 0.01\n"
    )
    stages = '"ingest", "encode", "index", "mine", "judge"'
    pipeline = Pipeline.load(pipeline_file(tmp_path, *small_inputs, extra=extra, stages=stages))
    report = pipeline.run(tmp_path / "run")["judge"]
    judgments = pl.read_parquet(tmp_path / "run" / "judge" / "judgments.parquet")
    failed = judgments.filter(pl.col("label_id") == "video")
    assert failed.height > 0 and report["failures_by_reason"] == {"http_500": failed.height}
    assert failed.select("score", "log_odds", "rank_in_doc").null_count().row(0) == (failed.height,) * 3
    assert judgments.filter(pl.col("label_id") != "video")["failure"].null_count() == judgments.height - failed.height

    server.faults_by_text = {}
    report = pipeline.run(tmp_path / "run", force=["judge"])["judge"]
    expected = (failed.height, judgments.height - failed.height, 0)
    assert (report["judged_now"], report["cache_hits"], report["failures"]) == expected
