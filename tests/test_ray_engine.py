"""The ray engine on a local Ray instance (2 CPUs) started here: the same artifacts as the local engine for encode,
judge (SmolLM2; the loopback OpenAI test server) and tag, and a killed worker or driver loses and duplicates
nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import pytest
import ray
import scipy.sparse as sp
import torch

from eztag.artifacts import read_shards
from eztag.engines import get_engine
from eztag.errors import EztagError
from eztag.judges.transformers import TransformersJudge
from eztag.pipeline import Pipeline
from eztag.prompts import PromptTemplate
from eztag.stages import judge as judge_stage
from eztag.stages.judge import SHARD_SCHEMA
from tests.conftest import DEBTAGS, REPO, cli_env
from tests.openai_server import CompletionsServer
from tests.test_resume import count_lost_and_duplicated

RAY = "pipeline.ray={actors=2, cpus_per_actor=1}"


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[str]:
    """A local Ray instance with 2 CPUs for this module; its GCS address."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def write_pipeline(folder: Path, documents: int, judge: str = "", stages: tuple[str, ...] = ()) -> Path:
    """`documents` debtags sample packages, the 392 real labels, 8-text encode chunks; `judge`: the [judge] table
    (with mine k = 5, shards of 5 pairs) or nothing; `stages` after ingest, encode, index."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = (DEBTAGS / "sample.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "docs.jsonl").write_text("".join(lines[:documents]), encoding="utf-8")
    judging = f"[mine]\nk = 5\n[judge]\nshard_size = 5\n{judge}\n" if judge else ""
    path = folder / "pipeline.toml"
    path.write_text(
        f"[pipeline]\nstages = {json.dumps(['ingest', 'encode', 'index', *stages])}\n"
        f'[ingest]\ndocuments = "docs.jsonl"\nlabels = "{DEBTAGS / "labels.jsonl"}"\n'
        f"[encode]\nchunk_size = 8\n{judging}",
        encoding="utf-8",
    )
    return path


def run(pipeline: Path, run_dir: Path, *overrides: str) -> None:
    Pipeline.load(pipeline, list(overrides)).run(run_dir)


def judgments(run_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(run_dir / "judge/judgments.parquet").drop("rank_in_doc")


def assert_same_judgments(run_dir: Path, reference: Path) -> None:
    """Identical judgments: the same shards are the same batches, and one torch thread per process on both sides
    (Ray gives an actor of one CPU one thread) makes the same float32 forward passes."""
    assert judgments(run_dir).equals(judgments(reference))


def test_encode_and_tag_equal_the_local_engine(ray_instance: str, tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, 60, stages=("tag", "evaluate"))
    run(pipeline, tmp_path / "local")
    run(pipeline, tmp_path / "ray", 'pipeline.engine="ray"', RAY)
    for store in ("labels", "documents"):
        chunks = sorted((tmp_path / "local/encode" / store).glob("chunk-*.npy"))
        assert len(chunks) == (49 if store == "labels" else 8)
        for chunk in chunks:
            np.testing.assert_allclose(np.load(tmp_path / "ray/encode" / store / chunk.name), np.load(chunk), atol=1e-5)
    assert pl.read_parquet(tmp_path / "ray/tag/tags.parquet").equals(
        pl.read_parquet(tmp_path / "local/tag/tags.parquet")
    )
    got, want = (sp.load_npz(tmp_path / name / "tag/tags.npz") for name in ("ray", "local"))
    assert (got != want).nnz == 0 and got.nnz == want.nnz > 0
    assert (tmp_path / "ray/evaluate/metrics.json").read_text() == (
        tmp_path / "local/evaluate/metrics.json"
    ).read_text()


@pytest.fixture(scope="module")
def smollm2_local(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(pipeline, run dir) of SmolLM2 (transformers, CPU, one thread) judging 12 packages' top-5 on the local engine."""
    folder = tmp_path_factory.mktemp("smollm2")
    pipeline = write_pipeline(folder, 12, '[judge.options]\ndevice = "cpu"', stages=("mine", "judge"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ray actors of one CPU each
    try:
        run(pipeline, folder / "local")
    finally:
        torch.set_num_threads(threads)
    return pipeline, folder / "local"


def test_smollm2_judgments_equal_the_local_engine(ray_instance: str, smollm2_local: tuple[Path, Path]) -> None:
    pipeline, local = smollm2_local
    run(pipeline, local.parent / "ray", 'pipeline.engine="ray"', RAY)
    got = judgments(local.parent / "ray")
    assert got.height == 60 and got["failure"].null_count() == 60
    assert_same_judgments(local.parent / "ray", local)


def test_openai_server_judgments_equal_the_local_engine(
    ray_instance: str, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    server = CompletionsServer(TransformersJudge(str(tiny_llama_dir), PromptTemplate.named("yes-no")), sleep_seconds=0)
    server.start()
    try:
        options = f'[judge.options]\nbase_url = "{server.url}"\ntokenizer = "{tiny_llama_dir}"\ntop_logprobs = 49152'
        pipeline = write_pipeline(tmp_path, 12, f'backend = "openai"\nmodel = "tiny"\n{options}', ("mine", "judge"))
        run(pipeline, tmp_path / "local")
        run(pipeline, tmp_path / "ray", 'pipeline.engine="ray"', RAY)
    finally:
        server.stop()
    got, want = judgments(tmp_path / "ray"), judgments(tmp_path / "local")
    assert got.height == 60 and got["failure"].null_count() == 60
    assert got.equals(want)


@pytest.mark.slow
def test_vllm_judge_runs_as_ray_data_vllm_processor(ray_instance: str, tmp_path: Path, vllm_cache: Path) -> None:
    # vllm_cache: SmolLM2's bf16 folder and vLLM's caches in the test session's cache folder
    options = '[judge.options]\nmax_model_len = 512\ndtype = "bfloat16"\nkv_cache_gib = 1\nenforce_eager = true'
    pipeline = write_pipeline(tmp_path, 12, f'backend = "vllm"\nmodel = "smollm2-135m"\n{options}', ("mine", "judge"))
    run(pipeline, tmp_path / "ray", 'pipeline.engine="ray"', "pipeline.ray={actors=1, cpus_per_actor=1}")
    driver_judge = judge_stage.build_judge(Pipeline.load(pipeline).configs["judge"])  # the one the stage built
    assert "llm" not in vars(driver_judge), "the driver started a vLLM engine of its own"
    local = subprocess.run(
        [sys.executable, "-m", "eztag.cli", "run", str(pipeline), "--run-dir", str(tmp_path / "local")],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert local.returncode == 0, local.stderr
    got = judgments(tmp_path / "ray")
    assert got.height == 60 and got["failure"].null_count() == 60
    assert json.loads((tmp_path / "ray/judge/report.json").read_text())["model"] == "smollm2-135m@vllm-bfloat16"
    assert got.drop("score", "log_odds").equals(judgments(tmp_path / "local").drop("score", "log_odds"))
    # one engine per process, batched differently: bf16 kernels may round the last bits differently
    np.testing.assert_allclose(
        got["log_odds"].to_numpy(), judgments(tmp_path / "local")["log_odds"].to_numpy(), atol=0.05
    )


def actor_processes() -> list[psutil.Process]:
    """The Ray Data map actors' worker processes (their process title names the actor class)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if command.startswith("ray::") and "MapWorker" in command:
            found.append(process)
    return found


def test_a_killed_worker_loses_and_duplicates_nothing(ray_instance: str, smollm2_local: tuple[Path, Path]) -> None:
    pipeline, local = smollm2_local
    run_dir = local.parent / "ray-killed"
    killed: list[int] = []

    def kill_an_actor_mid_stage() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            shards = list((run_dir / "cache/judge").glob("part-*.parquet"))
            actors = actor_processes()
            if len(shards) >= 2 and actors:
                killed.append(actors[0].pid)
                os.kill(actors[0].pid, signal.SIGKILL)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_an_actor_mid_stage)
    killer.start()
    run(pipeline, run_dir, 'pipeline.engine="ray"', RAY)
    killer.join()
    assert killed, "no actor was running while the judge stage had written shards"
    stored = len(read_shards(run_dir / "cache/judge", SHARD_SCHEMA))
    assert stored == 60, "a shard was lost or written twice"
    assert count_lost_and_duplicated(run_dir) == (0, 0)
    np.testing.assert_allclose(
        judgments(run_dir)["log_odds"].to_numpy(), judgments(local)["log_odds"].to_numpy(), atol=1e-5
    )


def test_a_killed_driver_resumes(ray_instance: str, smollm2_local: tuple[Path, Path]) -> None:
    pipeline, local = smollm2_local
    run_dir = local.parent / "driver-killed"
    command = [sys.executable, "-m", "eztag.cli", "run", str(pipeline), "--run-dir", str(run_dir), "--engine", "ray"]
    environment = cli_env(RAY_ADDRESS=ray_instance)
    driver = subprocess.Popen([*command, "--set", RAY], cwd=REPO, env=environment, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list((run_dir / "cache/judge").glob("part-*.parquet"))) < 2 and time.monotonic() < deadline:
        assert driver.poll() is None, "the run ended before it was killed"
        time.sleep(0.05)
    driver.kill()
    assert driver.wait() == -9
    stored_at_kill = len(read_shards(run_dir / "cache/judge", SHARD_SCHEMA))
    assert 0 < stored_at_kill < 60
    resumed = subprocess.run([*command, "--set", RAY], cwd=REPO, env=environment, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((run_dir / "judge/report.json").read_text())
    assert report["cache_hits"] >= stored_at_kill and report["judged_now"] == 60 - report["cache_hits"]
    assert count_lost_and_duplicated(run_dir) == (0, 0)
    np.testing.assert_allclose(
        judgments(run_dir)["log_odds"].to_numpy(), judgments(local)["log_odds"].to_numpy(), atol=1e-5
    )


def test_ray_missing_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    monkeypatch.delitem(sys.modules, "eztag.engines.ray_data", raising=False)
    with pytest.raises(EztagError, match=r"pip install 'eztag\[ray\]'"):
        get_engine("ray")
