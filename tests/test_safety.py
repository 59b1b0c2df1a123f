"""Whole-pipeline edge cases and safety: one label, k above the label count, writes only inside run_dir."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from eztag.artifacts import write_json, write_npy, write_parquet
from tests.conftest import REPO, eztag, pipeline_file
from tests.support.bad_inputs import DOCS, jsonl

IGNORED = {".git", ".pytest_cache", "__pycache__", ".ruff_cache"}


def snapshot(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if not IGNORED & set(path.parts)}


@pytest.mark.slow
def test_single_label_end_to_end_writes_only_into_run_dir(tmp_path: Path) -> None:
    inputs, work, home = tmp_path / "inputs", tmp_path / "work", tmp_path / "home"
    for folder in (inputs, work, home):
        folder.mkdir()
    (inputs / "docs.jsonl").write_bytes(jsonl(DOCS))
    (inputs / "labels.jsonl").write_bytes(jsonl([{"id": "audio", "text": "Audio"}]))
    pipeline = inputs / "pipeline.toml"
    pipeline.write_text(
        '[pipeline]\nstages = ["ingest", "encode", "index", "tag", "evaluate"]\nrun_dir = "out/run"\n'
        '[ingest]\ndocuments = "docs.jsonl"\nlabels = "labels.jsonl"\non_error = "skip"\n'
    )
    env = {"HOME": str(home), "HF_HOME": str(home / "hf"), "XDG_CACHE_HOME": str(home / "cache")}
    env |= {"MPLCONFIGDIR": str(home / "mpl"), "TMPDIR": str(home / "tmp")}
    before = snapshot(tmp_path) | snapshot(REPO)
    result = eztag("run", str(pipeline), cwd=work, env=env)
    assert result.returncode == 0, result.stderr
    assert "k = 100 is more than the 1 labels; each document gets at most 1" in result.stderr
    run_dir = inputs / "out" / "run"  # relative run_dir: taken from the pipeline file's folder, like every path
    new = (snapshot(tmp_path) | snapshot(REPO)) - before
    outside = [path for path in new if not path.is_relative_to(home) and path not in run_dir.parents]
    outside = [path for path in outside if not path.is_relative_to(run_dir) and path != run_dir]
    assert outside == []
    tags = pl.read_parquet(run_dir / "tag" / "tags.parquet")
    assert tags["doc_id"].to_list() == ["d1", "d2", "d3"] and set(tags["label_id"]) == {"audio"}
    assert json.loads((run_dir / "ingest" / "report.json").read_text())["skipped"] == {"unknown_label": 2}


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_artifacts_get_the_mode_the_umask_allows(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
        write_parquet(tmp_path / "b.parquet", pl.DataFrame({"a": [1]}))
        write_npy(tmp_path / "c.npy", np.zeros(2))
    finally:
        os.umask(previous)
    for name in ("a.json", "b.parquet", "c.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


@pytest.mark.slow
def test_k_larger_than_label_set_is_clamped(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    pipeline = pipeline_file(tmp_path, *small_inputs, extra="[tag]\nk = 10\n[evaluate]\nks = [1, 10]\n")
    result = eztag("run", str(pipeline))
    assert result.returncode == 0, result.stderr
    assert "each document gets at most 4" in result.stderr
    tags = pl.read_parquet(tmp_path / "run" / "tag" / "tags.parquet")
    assert tags.group_by("doc_id").len()["len"].to_list() == [4] * 6
    evaluated = json.loads((tmp_path / "run" / "evaluate" / "metrics.json").read_text())
    assert evaluated["ks"] == [1] and "R@10" not in evaluated["metrics"]
    assert evaluated["notes"] == ["@10 not reported: the ranked lists hold all 4 labels"]
    assert evaluated["recall_curve"][-1] == pytest.approx(1.0)  # every label ranked: recall at the full depth
