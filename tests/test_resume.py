"""Kill-anywhere resume: SIGKILL the pipeline at seeded random moments, rerun, compare with an uninterrupted run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from eztag.artifacts import RunDir, read_shards
from eztag.embeddings import EmbeddingStore
from eztag.judging import SHARD_SCHEMA
from tests.conftest import DEBTAGS, REPO, cli_env, eztag, pipeline_file, run_cli
from tests.support.reliability import KILLS_BY_STAGE, TALLY

STAGES = ("ingest", "encode", "index", "mine", "judge", "tag", "evaluate")
# Kill points aimed at each stage, and the longest wait after the stage's "[stage] running" line before the kill
# (about the stage's duration here). A kill that lands later is counted where it landed.
SCHEDULE = {"ingest": 3, "encode": 5, "index": 3, "mine": 3, "judge": 6, "tag": 3, "evaluate": 3}
WAIT = {"ingest": 0.02, "encode": 4.0, "index": 0.03, "mine": 0.02, "judge": 3.0, "tag": 0.1, "evaluate": 0.3}
TRIES = 3  # an aim that lands elsewhere (a fast stage already done) is counted there and tried again


def demo_like(folder: Path, run_dir: Path, judge_model: Path | None = None) -> Path:
    """60 debtags documents, the real 392 labels, 8-text encode chunks; with `judge_model`, also 5 mined candidates
    judged in shards of 8 pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = (DEBTAGS / "sample.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "docs.jsonl").write_text("".join(lines[:60]), encoding="utf-8")
    stages = [stage for stage in STAGES if judge_model or stage not in ("mine", "judge")]
    judging = (
        f'[mine]\nk = 5\n[judge]\nmodel = "{judge_model}"\nshard_size = 8\n[judge.options]\ndevice = "cpu"\n'
        if judge_model
        else ""
    )
    path = folder / "pipeline.toml"
    path.write_text(
        f'[pipeline]\nstages = {json.dumps(stages)}\nrun_dir = "{run_dir}"\n'
        f'[ingest]\ndocuments = "docs.jsonl"\nlabels = "{DEBTAGS / "labels.jsonl"}"\n'
        f"[encode]\nchunk_size = 8\n{judging}[tag]\nk = 20\n[evaluate]\nks = [1, 5, 20]\n",
        encoding="utf-8",
    )
    return path


def unfinished_stage(run_dir: Path) -> str:
    """The first stage without a manifest record: the one a kill interrupted."""
    finished = RunDir(run_dir).manifest()["stages"] if (run_dir / "manifest.json").exists() else {}
    return next((stage for stage in STAGES if stage not in finished), "none")


def kill_once(pipeline: Path, run_dir: Path, aim: str, rng: np.random.Generator) -> str | None:
    """Start `eztag run`, SIGKILL it a random moment after `aim` starts; the stage it interrupted, "between"
    stages, or None if the run finished first."""
    process = subprocess.Popen(
        [sys.executable, "-m", "eztag.cli", "run", str(pipeline)],
        cwd=REPO,
        env=cli_env(PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    started: list[str] = []
    aimed = threading.Event()

    def read() -> None:
        for line in process.stdout:
            if line.endswith("] running\n"):
                started.append(line[1 : line.index("]")])
                if started[-1] == aim or STAGES.index(started[-1]) > STAGES.index(aim):
                    aimed.set()
        aimed.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    aimed.wait(300)
    time.sleep(rng.uniform(0, WAIT[aim]))
    if process.poll() is not None:
        reader.join()
        return None
    process.kill()
    assert process.wait() == -9
    reader.join()
    hit = unfinished_stage(run_dir)
    return hit if started and started[-1] == hit else "between"


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Value-for-value equal artifacts: ingest tables, embeddings, candidates, judgments, tags and metrics."""
    for name in ("documents", "labels", "ground_truth"):
        assert pl.read_parquet(run_dir / f"ingest/{name}.parquet").equals(
            pl.read_parquet(reference / f"ingest/{name}.parquet")
        )
    for name in ("labels", "documents"):
        got, want = (EmbeddingStore(root / "encode" / name).load() for root in (run_dir, reference))
        assert np.array_equal(got, want), name
    for name in ("mine/candidates.parquet", "tag/tags.parquet"):
        assert pl.read_parquet(run_dir / name).equals(pl.read_parquet(reference / name)), name
    judged, want = (pl.read_parquet(root / "judge/judgments.parquet") for root in (run_dir, reference))
    assert judged.select("doc_id", "label_id").equals(want.select("doc_id", "label_id"))
    # resumed shards batch the pairs differently: padding changes the last bits of a float32 forward pass
    np.testing.assert_allclose(judged["score"].to_numpy(), want["score"].to_numpy(), atol=1e-5)
    assert json.loads((run_dir / "evaluate/metrics.json").read_text()) == json.loads(
        (reference / "evaluate/metrics.json").read_text()
    )


def count_lost_and_duplicated(run_dir: Path) -> tuple[int, int]:
    """(candidate pairs without a stored judgment, judgments stored more than once) across the cache shards."""
    keys = read_shards(run_dir / "cache/judge", SHARD_SCHEMA)["key"]
    judged = pl.read_parquet(run_dir / "judge/judgments.parquet")
    candidates = pl.read_parquet(run_dir / "mine/candidates.parquet")
    lost = candidates.height - judged.filter(pl.col("score").is_not_null()).height
    return lost, keys.len() - keys.n_unique()


@pytest.mark.slow
def test_kill_anywhere_then_resume(tmp_path: Path, tiny_llama_dir: Path) -> None:
    reference = tmp_path / "reference"
    run_cli("run", str(demo_like(tmp_path / "a", reference, tiny_llama_dir)), cwd=REPO)
    run_dir = tmp_path / "killed"
    pipeline = demo_like(tmp_path / "b", run_dir, tiny_llama_dir)
    rng = np.random.default_rng(7)
    hits: Counter[str] = Counter()
    for aim, times in SCHEDULE.items():
        for _ in range(times):
            for _ in range(TRIES):
                hit = kill_once(pipeline, run_dir, aim, rng)
                if hit is not None:
                    hits[hit] += 1
                if hit == aim:
                    break
    final = run_cli("run", str(pipeline), cwd=REPO)
    assert "Traceback" not in final.stderr
    print(f"\nkill points survived: {sum(hits.values())} {dict(hits)}")
    assert sum(hits[stage] for stage in STAGES) >= 20, hits
    # the stages that keep partial work (encode's batches, judge's shards) must be hit; which of the fast ones
    # (ingest, index, mine, tag: tens of ms) a kill lands in is the host's timing (a fast host hit 4 stages of 7)
    assert hits["encode"] and hits["judge"] and sum(hits[stage] > 0 for stage in STAGES) >= 3, hits
    assert not list(run_dir.rglob("*.tmp"))
    assert_same_run(run_dir, reference)
    lost, duplicated = count_lost_and_duplicated(run_dir)
    assert (lost, duplicated) == (0, 0)
    tags = pl.read_parquet(run_dir / "tag/tags.parquet")
    assert tags.select("doc_id", "rank").is_duplicated().sum() == 0
    assert tags["doc_id"].n_unique() == 60
    KILLS_BY_STAGE.update(hits)
    TALLY.update(lost=lost, duplicated=duplicated)

    # A flipped byte in an encode chunk and in tags.parquet: caught by the manifest checksums and rebuilt.
    for name in ("encode/documents/chunk-00002.npy", "tag/tags.parquet"):
        data = bytearray((run_dir / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (run_dir / name).write_bytes(bytes(data))
    rerun = run_cli("run", str(pipeline), cwd=REPO).stderr  # warnings go to stderr
    assert "documents/chunk-00002.npy does not match its checksum" in rerun
    assert "tags.parquet does not match its checksum" in rerun
    assert_same_run(run_dir, reference)


def test_corrupted_output_is_rebuilt(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    pipeline = pipeline_file(tmp_path, *small_inputs, stages='"ingest", "encode"')
    assert eztag("ingest", str(pipeline)).returncode == 0
    path = tmp_path / "run" / "ingest" / "documents.parquet"
    original = path.read_bytes()
    path.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
    (tmp_path / "run" / "ingest" / ".documents.parquet.x.tmp").write_bytes(b"partial")
    result = eztag("ingest", str(pipeline))
    assert "documents.parquet does not match its checksum" in result.stderr
    assert path.read_bytes() == original
    assert not list((tmp_path / "run").rglob("*.tmp"))
    assert "up to date" in eztag("ingest", str(pipeline)).stdout


def test_corrupt_manifest_is_one_line_error(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    pipeline = pipeline_file(tmp_path, *small_inputs, stages='"ingest", "encode"')
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text("{not json")
    result = eztag("ingest", str(pipeline))
    assert result.returncode == 2 and result.stderr.startswith("eztag: error: ") and "manifest.json" in result.stderr
