"""Kill-anywhere resume: SIGKILL the pipeline at seeded random moments, rerun, compare with an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from eztag.artifacts import RunDir
from eztag.embeddings import EmbeddingStore
from tests.conftest import DEBTAGS, REPO, pipeline_file, run_cli
from tests.test_bad_inputs import eztag

STAGES = ("ingest", "encode", "index", "tag", "evaluate")
# Kill points aimed at each stage; a kill that lands later than aimed is still a kill point (counted where it hit).
SCHEDULE = {"ingest": 4, "encode": 10, "index": 3, "tag": 3, "evaluate": 4}


def demo_like(folder: Path, run_dir: Path) -> Path:
    """60 debtags documents with the real 392 labels; 8-text chunks, so encode has 57 chunk boundaries."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = (DEBTAGS / "sample.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "docs.jsonl").write_text("".join(lines[:60]), encoding="utf-8")
    path = folder / "pipeline.toml"
    path.write_text(
        f'[pipeline]\nstages = {json.dumps(list(STAGES))}\nrun_dir = "{run_dir}"\n'
        f'[ingest]\ndocuments = "docs.jsonl"\nlabels = "{DEBTAGS / "labels.jsonl"}"\n'
        "[encode]\nchunk_size = 8\n[tag]\nk = 20\n[evaluate]\nks = [1, 5, 20]\n",
        encoding="utf-8",
    )
    return path


def visible_files(directory: Path) -> int:
    return sum(1 for path in directory.rglob("*") if path.is_file() and not path.name.startswith("."))


def running_stage(run_dir: Path) -> str:
    """The first stage without a manifest record: the one a kill interrupted."""
    finished = RunDir(run_dir).manifest()["stages"]
    return next((stage for stage in STAGES if stage not in finished), "after evaluate")


def kill_once(pipeline: Path, run_dir: Path, aim: str, rng: np.random.Generator) -> str | None:
    """Start `eztag run`, wait for `aim` to make some progress, SIGKILL it; the stage hit, or None if it finished."""
    process = subprocess.Popen(
        [sys.executable, "-m", "eztag.cli", "run", str(pipeline)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stage_dir = run_dir / aim
    progress = int(rng.integers(2, 8)) if aim == "encode" else int(rng.integers(0, 2))
    target = None
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        stage = running_stage(run_dir)
        if STAGES.index(stage) > STAGES.index(aim) if stage in STAGES else True:
            break  # aimed stage already finished: the kill lands in a later one
        if stage == aim and stage_dir.exists():
            target = visible_files(stage_dir) + progress if target is None else target
            if visible_files(stage_dir) >= target:
                break
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.4) if aim == "encode" else rng.uniform(0, 0.02))
    if process.poll() is not None:
        return None
    process.kill()
    assert process.wait() == -9
    return running_stage(run_dir)


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Value-for-value equal artifacts: ingest tables, embeddings, tags and metrics."""
    for name in ("documents", "labels", "ground_truth"):
        assert pl.read_parquet(run_dir / f"ingest/{name}.parquet").equals(
            pl.read_parquet(reference / f"ingest/{name}.parquet")
        )
    for name in ("labels", "documents"):
        got, want = (EmbeddingStore(root / "encode" / name).load() for root in (run_dir, reference))
        assert np.array_equal(got, want), name
    tags, want = (pl.read_parquet(root / "tag/tags.parquet") for root in (run_dir, reference))
    assert tags.equals(want)
    assert json.loads((run_dir / "evaluate/metrics.json").read_text()) == json.loads(
        (reference / "evaluate/metrics.json").read_text()
    )


@pytest.mark.slow
def test_kill_anywhere_then_resume(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    run_cli("run", str(demo_like(tmp_path / "a", reference)), cwd=REPO)
    run_dir = tmp_path / "killed"
    pipeline = demo_like(tmp_path / "b", run_dir)
    rng = np.random.default_rng(7)
    hits: dict[str, int] = {}
    for aim, times in SCHEDULE.items():
        for _ in range(times):
            hit = kill_once(pipeline, run_dir, aim, rng)
            if hit in STAGES:
                hits[hit] = hits.get(hit, 0) + 1
    final = run_cli("run", str(pipeline), cwd=REPO)
    assert "Traceback" not in final.stderr
    survived = sum(hits.values())
    print(f"\nkill points survived: {survived} {hits}")
    assert survived >= 20
    assert not list(run_dir.rglob("*.tmp"))
    assert_same_run(run_dir, reference)
    tags = pl.read_parquet(run_dir / "tag/tags.parquet")
    assert tags.select("doc_id", "rank").is_duplicated().sum() == 0
    assert tags["doc_id"].n_unique() == 60

    # A flipped byte in an encode chunk and in tags.parquet: caught by the manifest checksums and rebuilt.
    for name in ("encode/documents/chunk-00002.npy", "tag/tags.parquet"):
        data = bytearray((run_dir / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (run_dir / name).write_bytes(bytes(data))
    rerun = run_cli("run", str(pipeline), cwd=REPO).stdout
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
    assert "documents.parquet does not match its checksum" in result.stdout
    assert path.read_bytes() == original
    assert not list((tmp_path / "run").rglob("*.tmp"))
    assert "up to date" in eztag("ingest", str(pipeline)).stdout


def test_corrupt_manifest_is_one_line_error(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    pipeline = pipeline_file(tmp_path, *small_inputs, stages='"ingest", "encode"')
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text("{not json")
    result = eztag("ingest", str(pipeline))
    assert result.returncode == 2 and result.stderr.startswith("eztag: error: ") and "manifest.json" in result.stderr
