"""The ray engine on a local Ray instance (2 CPUs, `ray_instance` in conftest): the same artifacts as the local
engine for encode, judge (SmolLM2 on Ray Data's vLLM processor; a transformers judge and the loopback OpenAI test
server in the actor pool) and tag, and a killed worker or driver loses and duplicates nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import pytest
import scipy.sparse as sp

from eztag import judging
from eztag.artifacts import read_shards
from eztag.engines import get_engine
from eztag.errors import EztagError
from eztag.judges import Judgment
from eztag.judges.transformers import TransformersJudge
from eztag.judging import SHARD_SCHEMA
from eztag.pipeline import Pipeline
from eztag.prompts import PromptTemplate
from tests.conftest import DEBTAGS, REPO, cli_env, run_cli
from tests.support.judge_pairs import assert_agree_float32
from tests.support.openai_server import CompletionsServer
from tests.test_resume import count_lost_and_duplicated

pytestmark = pytest.mark.xdist_group("ray")  # one worker: one Ray instance
RAY = "pipeline.ray={actors=2, cpus_per_actor=1}"


def write_pipeline(
    folder: Path, documents: int, judge: str = "", stages: tuple[str, ...] = (), shard_size: int = 5
) -> Path:
    """`documents` debtags sample packages, the 392 real labels, 8-text encode chunks; `judge`: the [judge] table
    (with mine k = 5, shards of `shard_size` pairs) or nothing; `stages` after ingest, encode, index."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = (DEBTAGS / "sample.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "docs.jsonl").write_text("".join(lines[:documents]), encoding="utf-8")
    judging = f"[mine]\nk = 5\n[judge]\nshard_size = {shard_size}\n{judge}\n" if judge else ""
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


def run_one_thread(pipeline: Path, run_dir: Path, ray_address: str = "") -> None:
    """`eztag run` in a process of its own with one thread, as a Ray actor of one CPU gets (Ray sets
    OMP_NUM_THREADS=1); with `ray_address`, on the ray engine there (its driver stages, e.g. mine, in one thread too).
    The matrix-product kernels depend on the thread count: 2 threads changed the last bits of whole label chunks,
    enough to swap labels of the same text (accessibility::speech, sound::speech) in the tags."""
    engine = ["--set", 'pipeline.engine="ray"', "--set", RAY] if ray_address else []
    environment = {"OMP_NUM_THREADS": "1"} | ({"RAY_ADDRESS": ray_address} if ray_address else {})
    run_cli("run", str(pipeline), "--run-dir", str(run_dir), *engine, env=environment)


def judgments(run_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(run_dir / "judge/judgments.parquet").drop("rank_in_doc")


def assert_same_judgments(run_dir: Path, reference: Path) -> None:
    """The same pairs, failures and order, verdicts within 1e-4 log-odds: the same shards are the same batches,
    but the actors' math-library settings come from the Ray instance's environment (a vLLM test earlier in the
    session changes it), so the last float32 bits may differ."""
    got, want = judgments(run_dir), judgments(reference)
    assert got.drop("score", "log_odds").equals(want.drop("score", "log_odds"))
    np.testing.assert_allclose(got["log_odds"].to_numpy(), want["log_odds"].to_numpy(), rtol=0, atol=1e-4)


def test_encode_and_tag_equal_the_local_engine(ray_instance: str, tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, 60, stages=("tag", "evaluate"))
    run_one_thread(pipeline, tmp_path / "local")
    run_one_thread(pipeline, tmp_path / "ray", ray_instance)
    for store in ("labels", "documents"):
        chunks = sorted((tmp_path / "local/encode" / store).glob("chunk-*.npy"))
        assert len(chunks) == (49 if store == "labels" else 8)
        for chunk in chunks:
            np.testing.assert_array_equal(np.load(tmp_path / "ray/encode" / store / chunk.name), np.load(chunk))
    assert pl.read_parquet(tmp_path / "ray/tag/tags.parquet").equals(
        pl.read_parquet(tmp_path / "local/tag/tags.parquet")
    )
    got, want = (sp.load_npz(tmp_path / name / "tag/tags.npz") for name in ("ray", "local"))
    assert (got != want).nnz == 0 and got.nnz == want.nnz > 0
    assert (tmp_path / "ray/evaluate/metrics.json").read_text() == (
        tmp_path / "local/evaluate/metrics.json"
    ).read_text()


@pytest.fixture(scope="module")
def tiny_local(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> tuple[Path, Path]:
    """(pipeline, run dir) of the tiny random Llama (transformers, CPU, one thread) judging 60 packages' top-5 in
    shards of 2 pairs (150 shards) on the local engine; the stages before the judge are kept beside it in `mined`."""
    folder = tmp_path_factory.mktemp("tiny")
    judge = f'model = "{tiny_llama_dir}"\n[judge.options]\ndevice = "cpu"'
    pipeline = write_pipeline(folder, 60, judge, stages=("mine", "judge"), shard_size=2)
    local = copy_of(mine_locally(pipeline, folder / "mined"), "local")
    run_one_thread(pipeline, local)
    return pipeline, local


def mine_locally(pipeline: Path, run_dir: Path) -> Path:
    """`run_dir` holding the pipeline's stages up to mine, run locally in one thread: the kill tests' runs on Ray
    start from copies of it and only judge there (test_encode_and_tag_equal_the_local_engine covers the stages
    before on Ray)."""
    run_cli("mine", str(pipeline), "--run-dir", str(run_dir), env={"OMP_NUM_THREADS": "1"})
    return run_dir


def copy_of(run_dir: Path, name: str) -> Path:
    """A copy of the run dir `run_dir` beside it, named `name`."""
    return Path(shutil.copytree(run_dir, run_dir.parent / name))


def test_openai_server_judgments_equal_the_local_engine(
    ray_instance: str, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    server = CompletionsServer(TransformersJudge(str(tiny_llama_dir), PromptTemplate.named("yes-no")), sleep_seconds=0)
    server.start()
    try:
        options = f'[judge.options]\nbase_url = "{server.url}"\ntokenizer = "{tiny_llama_dir}"\ntop_logprobs = 49152'
        pipeline = write_pipeline(tmp_path, 12, f'backend = "openai"\nmodel = "tiny"\n{options}', ("mine", "judge"))
        run_one_thread(pipeline, tmp_path / "local")
        run_one_thread(pipeline, tmp_path / "ray", ray_instance)
    finally:
        server.stop()
    got, want = judgments(tmp_path / "ray"), judgments(tmp_path / "local")
    assert got.height == 60 and got["failure"].null_count() == 60
    assert got.equals(want)


@pytest.mark.slow
def test_vllm_judge_runs_as_ray_data_vllm_processor(ray_instance: str, tmp_path: Path, vllm_cache: Path) -> None:
    """SmolLM2 in float32 on Ray Data's vLLM processor (one engine, in its actor) against the transformers judge in
    float32 on the same bf16 folder, in this process: vLLM and transformers agree to 1e-4 in P(yes) there
    (tests/support/judge_pairs.py), so no second engine is started for the reference."""
    options = '[judge.options]\nmax_model_len = 512\ndtype = "float32"\nkv_cache_gib = 1\nenforce_eager = true'
    pipeline = write_pipeline(tmp_path, 12, f'backend = "vllm"\nmodel = "smollm2-135m"\n{options}', ("mine", "judge"))
    run(pipeline, tmp_path / "ray", 'pipeline.engine="ray"', "pipeline.ray={actors=1, cpus_per_actor=1}")
    config = Pipeline.load(pipeline).configs["judge"]
    driver_judge = judging.build_judge(config)  # the one the stage built
    assert "llm" not in vars(driver_judge), "the driver started a vLLM engine of its own"
    got = judgments(tmp_path / "ray")
    assert got.height == 60 and got["failure"].null_count() == 60
    assert json.loads((tmp_path / "ray/judge/report.json").read_text())["model"] == "smollm2-135m@vllm-float32"
    candidates = pl.read_parquet(tmp_path / "ray/mine/candidates.parquet")
    pairs = judging.candidate_pairs(config, driver_judge, tmp_path / "ray/ingest", candidates)
    judging.release_judge()
    local = TransformersJudge(driver_judge.folder, driver_judge.template, device="cpu", precision="float32")
    assert_agree_float32(
        [Judgment(score=score) for score in got["score"].to_list()],
        [judgment.score for judgment in local.score(pairs)],
    )


def actor_processes() -> list[psutil.Process]:
    """The Ray Data map actors' worker processes (their process title names the actor class)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if command.startswith("ray::") and "MapWorker" in command:
            found.append(process)
    return found


def test_transformers_judgments_equal_the_local_engine_with_a_worker_killed(
    ray_instance: str, tiny_local: tuple[Path, Path]
) -> None:
    pipeline, local = tiny_local
    run_dir = copy_of(local.parent / "mined", "ray-killed")
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
    run_one_thread(pipeline, run_dir, ray_instance)
    killer.join()
    assert killed, "no actor was running while the judge stage had written shards"
    stored = len(read_shards(run_dir / "cache/judge", SHARD_SCHEMA))
    assert stored == 300, "a shard was lost or written twice"
    assert count_lost_and_duplicated(run_dir) == (0, 0)
    assert judgments(run_dir)["failure"].null_count() == 300
    assert_same_judgments(run_dir, local)


def test_a_killed_driver_resumes(ray_instance: str, tiny_local: tuple[Path, Path]) -> None:
    pipeline, local = tiny_local
    run_dir = copy_of(local.parent / "mined", "driver-killed")
    command = [sys.executable, "-m", "eztag.cli", "run", str(pipeline), "--run-dir", str(run_dir), "--engine", "ray"]
    environment = cli_env(RAY_ADDRESS=ray_instance)
    one_actor = "pipeline.ray={actors=1, cpus_per_actor=1}"
    driver = subprocess.Popen([*command, "--set", one_actor], cwd=REPO, env=environment, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list((run_dir / "cache/judge").glob("part-*.parquet"))) < 2 and time.monotonic() < deadline:
        assert driver.poll() is None, "the run ended before it was killed"
        time.sleep(0.05)
    driver.kill()
    assert driver.wait() == -9
    stored_at_kill = len(read_shards(run_dir / "cache/judge", SHARD_SCHEMA))
    assert 0 < stored_at_kill < 300
    resumed = subprocess.run([*command, "--set", one_actor], cwd=REPO, env=environment, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((run_dir / "judge/report.json").read_text())
    assert report["cache_hits"] >= stored_at_kill and report["judged_now"] == 300 - report["cache_hits"]
    assert count_lost_and_duplicated(run_dir) == (0, 0)
    assert_same_judgments(run_dir, local)


def test_ray_missing_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    monkeypatch.delitem(sys.modules, "eztag.engines.ray_data", raising=False)
    with pytest.raises(EztagError, match=r"pip install 'eztag\[ray\]'"):
        get_engine("ray")
