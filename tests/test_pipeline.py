"""The pipeline end to end through the CLI: real encoder, real files, rerun and --force behaviour."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from eztag.pipeline import Pipeline
from tests.conftest import REPO, pipeline_file, run_cli


@pytest.mark.slow
def test_pipeline_tags_evaluates_and_skips_finished_stages(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    config = pipeline_file(tmp_path, *small_inputs, extra="[tag]\nk = 3\n")
    first = run_cli("run", str(config))
    assert "| P |" in first.stdout
    run_dir = tmp_path / "run"
    tags = pl.read_parquet(run_dir / "tag" / "tags.parquet")
    assert tags.columns == ["doc_id", "rank", "label_id", "score", "selected"]
    assert tags.group_by("doc_id").len()["len"].to_list() == [3] * 6
    top1 = dict(tags.filter(pl.col("rank") == 1).select("doc_id", "label_id").iter_rows())
    # the encoder is real: unambiguous documents get their topic's label first
    assert top1["d3"] == "devel" and top1["d5"] == "game" and top1["d2"] == "audio"
    assert (tags.group_by("doc_id").agg(pl.col("score").diff().drop_nulls().max())["score"] <= 0).all()
    matrix = sp.load_npz(run_dir / "tag" / "tags.npz")
    assert matrix.shape == (6, 4) and matrix.nnz == 18
    assert matrix[2, 2] == pytest.approx(
        tags.filter((pl.col("doc_id") == "d3") & (pl.col("label_id") == "devel"))["score"][0]
    )
    evaluated = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    metrics = evaluated["metrics"]
    assert metrics["P@1"] >= 0.5
    # ranked 3 of 4 labels deep: the default cut-offs beyond 3 are left out, with a note
    assert evaluated["ks"] == [1, 3] and "R@5" not in metrics and "@5, @10" in evaluated["notes"][0]
    assert "| @5" not in first.stdout and "note: @5, @10" in first.stdout
    assert "not reported" in (run_dir / "evaluate" / "metrics.md").read_text()
    assert (run_dir / "evaluate" / "recall_at_k.png").read_bytes()[:4] == b"\x89PNG"

    second = run_cli("run", str(config))
    assert second.stdout.count("up to date, skipped") == 5
    forced = run_cli("run", str(config), "--force", "tag")
    assert "[tag] running" in forced.stdout and "[encode] up to date" in forced.stdout
    assert "[evaluate] running" in forced.stdout  # downstream of the forced stage reruns too

    changed = run_cli("run", str(config), "--set", "tag.k=2")
    assert "[encode] up to date" in changed.stdout and "[tag] running" in changed.stdout
    assert "[evaluate] running" in changed.stdout
    assert pl.read_parquet(run_dir / "tag" / "tags.parquet").height == 12


@pytest.mark.parametrize("path", sorted((REPO / "pipelines").glob("*.toml")), ids=lambda path: path.name)
def test_shipped_pipelines_load_and_find_their_inputs(path: Path) -> None:
    pipeline = Pipeline.load(path)
    assert pipeline.stages[0] == "ingest"
    ingest = pipeline.configs["ingest"]
    assert Path(ingest.documents).is_file() and Path(ingest.labels).is_file()
    # run_dir is relative to the pipeline file, like the inputs, wherever eztag is started from
    assert pipeline.default_run_dir().parent == REPO / "runs"


def test_force_reruns_the_stage_and_everything_downstream(
    tmp_path: Path, small_inputs: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eztag")
    config = pipeline_file(tmp_path, *small_inputs, stages='"ingest", "encode", "index", "tag"')
    pipeline = Pipeline.load(config)
    pipeline.run(tmp_path / "run")
    tags = tmp_path / "run" / "tag" / "tags.parquet"
    before = tags.stat().st_mtime_ns
    caplog.clear()
    pipeline.run(tmp_path / "run", force=["index"])
    out = caplog.text
    assert "[ingest] up to date" in out and "[encode] up to date" in out
    assert "[index] running" in out and "[tag] running" in out and "skipped" not in out.split("[index]", 1)[1]
    assert tags.stat().st_mtime_ns != before
    caplog.clear()
    pipeline.run(tmp_path / "run", until="index", force=["encode"])  # with a target: only what leads to it
    out = caplog.text
    assert "[encode] running" in out and "[index] running" in out and "[tag]" not in out
    assert "already on disk" not in out  # a forced stage recomputes its chunks instead of resuming them


def test_stage_subcommand_runs_only_upstream(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    config = pipeline_file(tmp_path, *small_inputs)
    result = run_cli("ingest", str(config))
    assert "[ingest] done" in result.stdout and "[encode]" not in result.stdout
    documents = pl.read_parquet(tmp_path / "run" / "ingest" / "documents.parquet")
    assert documents["doc_id"].to_list() == ["d1", "d2", "d3", "d4", "d5", "d6"]
    truth = pl.read_parquet(tmp_path / "run" / "ingest" / "ground_truth.parquet")
    assert truth.height == 7


def test_changed_input_file_reruns_ingest(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    documents, labels = small_inputs
    config = pipeline_file(tmp_path, documents, labels)
    run_cli("ingest", str(config))
    assert "up to date" in run_cli("ingest", str(config)).stdout
    documents.write_text(documents.read_text() + '{"id": "d7", "text": "Another game"}\n')
    assert "[ingest] done" in run_cli("ingest", str(config)).stdout


def test_model_retrained_in_place_reruns_encode(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    from eztag.models import resolve_encoder

    model = tmp_path / "model"
    shutil.copytree(resolve_encoder("default"), model)
    config = pipeline_file(tmp_path, *small_inputs, extra=f'model = "{model}"\n', stages='"ingest", "encode"')
    run_cli("encode", str(config))
    assert "[encode] up to date" in run_cli("encode", str(config)).stdout
    (model / "README.md").write_text("retrained in place\n")  # same path, new files: a distil round does this
    assert "[encode] done" in run_cli("encode", str(config)).stdout


@pytest.mark.slow
def test_exact_and_faiss_flat_agree_and_hnsw_reports_recall(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    from tests.conftest import DEBTAGS

    config = pipeline_file(tmp_path, DEBTAGS / "sample.jsonl", DEBTAGS / "labels.jsonl", extra="[tag]\nk = 10\n")
    config.write_text(config.read_text().replace("chunk_size = 2", "chunk_size = 512"))
    run_dir = tmp_path / "run"
    results = {}
    for name, overrides in (
        ("exact", ["index.backend='exact'"]),
        ("flat", ["index.backend='faiss'", "index.options={factory='Flat'}"]),
        ("hnsw", ["index.backend='faiss'", "index.options={factory='HNSW32', ef_search=16}"]),
    ):  # one run directory: documents and labels are encoded once, index and tag rerun per backend
        run_cli("tag", str(config), *(arg for override in overrides for arg in ("--set", override)))
        results[name] = (
            pl.read_parquet(run_dir / "tag" / "tags.parquet"),
            json.loads((run_dir / "index" / "report.json").read_text()),
        )
    (exact, _), (flat, flat_report), (_, hnsw_report) = results.values()
    # same scores rank by rank; labels may only trade places where scores tie (float summation order differs),
    # so the labels scoring clearly above the 10th score must be the same set
    np.testing.assert_allclose(exact["score"].to_numpy(), flat["score"].to_numpy(), atol=1e-5)
    for (doc_id,), exact_doc in exact.group_by("doc_id"):
        flat_doc = flat.filter(pl.col("doc_id") == doc_id)
        cutoff = exact_doc["score"].min() + 1e-5
        assert set(exact_doc.filter(pl.col("score") > cutoff)["label_id"]) == set(
            flat_doc.filter(pl.col("score") > cutoff)["label_id"]
        )
    assert 0.5 <= hnsw_report["recall_vs_exact"]["recall@10"] <= 1.0 and hnsw_report["exact"] is False
    assert flat_report["exact"] is True


def test_compare_writes_table_and_plot(tmp_path: Path) -> None:
    for name, p1 in (("a", 0.5), ("b", 0.7)):
        directory = tmp_path / name / "evaluate"
        directory.mkdir(parents=True)
        values = {f"{m}@{k}": p1 for m in ("P", "R", "nDCG", "PSP", "coverage") for k in (1, 5)}
        (directory / "metrics.json").write_text(
            json.dumps({"metrics": values, "recall_curve": [0.2, 0.4], "ks": [1, 5]})
        )
    result = run_cli("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp"))
    assert "| a | P | 0.5000 | 0.5000 |" in result.stdout and "| b | P | 0.7000 |" in result.stdout
    assert (tmp_path / "cmp" / "recall_at_k.png").exists()
    assert "<td>a</td><td>P</td>" in (tmp_path / "cmp" / "comparison.html").read_text(encoding="utf-8")


def test_config_error_is_one_line(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    config = pipeline_file(tmp_path, *small_inputs, extra="[tag]\nkk = 3\n")
    result = run_cli("run", str(config), check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"eztag: error: {config}: field '[tag]': unknown key 'kk' (did you mean 'k'?)"
    ]


def test_a_longer_dotted_set_reaches_a_nested_table(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    config = pipeline_file(tmp_path, *small_inputs, extra="[index]\noptions = { query_batch_size = 8 }\n")
    dotted = Pipeline.load(
        config, ["tag.conse.top=3", "tag.conse.alpha=0.2", "tag.conse.temperature=0.1", "index.options.device='cpu'"]
    )
    inline = Pipeline.load(config, ["tag.conse={top = 3, alpha = 0.2, temperature = 0.1}"])
    assert dotted.configs["tag"].conse == inline.configs["tag"].conse
    assert (dotted.configs["tag"].conse.top, dotted.configs["tag"].conse.alpha) == (3, 0.2)
    assert dotted.configs["index"].options == {"query_batch_size": 8, "device": "cpu"}  # the table's other keys kept
