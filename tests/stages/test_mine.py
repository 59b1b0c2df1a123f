"""The mine stage: dense top-k candidates from the index, unioned with BM25 ones over the label texts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from eztag import mining
from eztag.embeddings import EmbeddingStore
from eztag.errors import EztagError
from eztag.pipeline import Pipeline
from tests.conftest import REPO, assert_one_line_error, eztag, pipeline_file


def test_mine_dense_and_bm25(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    stages = '"ingest", "encode", "index", "mine"'
    path = pipeline_file(tmp_path, *small_inputs, extra="[mine]\nk = 2\nbm25_k = 2\n", stages=stages)
    Pipeline.load(path).run(tmp_path / "run")
    candidates = pl.read_parquet(tmp_path / "run" / "mine" / "candidates.parquet")
    assert list(candidates.columns) == ["doc_id", "label_id", "source", "student_score", "student_rank"]
    assert candidates.select("doc_id", "label_id").is_unique().all()
    assert set(candidates["source"]) <= {"dense", "bm25", "both"} and "both" in set(candidates["source"])
    dense = candidates.filter(pl.col("source") != "bm25")
    assert dense.group_by("doc_id").agg(pl.col("student_rank").sort())["student_rank"].to_list() == [[1, 2]] * 6
    # "Play music ..." shares "music" with the label "Audio and music" only
    d2 = candidates.filter(pl.col("doc_id") == "d2")
    assert d2.filter(pl.col("label_id") == "audio")["source"].to_list() == ["both"]
    bm25_only = candidates.filter(pl.col("source") == "bm25")
    assert bm25_only["student_rank"].null_count() == bm25_only.height
    documents = EmbeddingStore(tmp_path / "run" / "encode" / "documents").load()
    labels = EmbeddingStore(tmp_path / "run" / "encode" / "labels").load()
    doc_ids, label_ids = ["d1", "d2", "d3", "d4", "d5", "d6"], ["audio", "video", "devel", "game"]
    for doc_id, label_id, score in candidates.select("doc_id", "label_id", "student_score").iter_rows():
        expected = documents[doc_ids.index(doc_id)] @ labels[label_ids.index(label_id)]
        assert score == pytest.approx(float(expected), abs=1e-5)


def test_pick_documents() -> None:
    assert mining.pick_documents(5, mining.MineConfig()).tolist() == [0, 1, 2, 3, 4]
    assert mining.pick_documents(5, mining.MineConfig(documents_limit=2)).tolist() == [0, 1]
    sample = mining.pick_documents(100, mining.MineConfig(documents_limit=10, sample="random", seed=3))
    assert len(set(sample.tolist())) == 10 and np.all(np.diff(sample) > 0)


def test_bm25_missing_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bm25s", None)
    with pytest.raises(EztagError, match=r"bm25s is not installed; install it with: pip install 'eztag\[judge\]'"):
        mining.bm25_candidates(["a document"], ["a label"], 1)


def budget_candidates() -> pl.DataFrame:
    """Four documents of three candidates; the gap between the first two scores: d1 0.3, d2 0.01, d3 0.1, d4 0.2."""
    firsts = {"d1": (0.9, 0.6), "d2": (0.5, 0.49), "d3": (0.7, 0.6), "d4": (0.8, 0.6)}
    rows = [
        (doc_id, f"{doc_id}-l{rank}", "dense", score, rank)
        for doc_id, (first, second) in firsts.items()
        for rank, score in enumerate((first, second, 0.1), start=1)
    ]
    return pl.DataFrame(rows, schema=mining.SCHEMA, orient="row")


def test_budget_goes_to_whole_documents_where_the_student_is_least_sure() -> None:
    candidates = budget_candidates()

    def chosen(budget: int | None, by: str = "gap", always: tuple[str, ...] = (), depth: int | None = None) -> list:
        config = mining.MineConfig(budget=budget, budget_by=by, budget_depth=depth)  # type: ignore[arg-type]
        kept = mining.within_budget(candidates, config, always)
        deep = ~pl.col("doc_id").is_in(always) & (pl.col("student_rank") > (depth or 3))
        whole = candidates.filter(pl.col("doc_id").is_in(kept["doc_id"].unique().to_list()) & ~deep)
        assert kept.equals(whole)
        return sorted(kept["doc_id"].unique().to_list())

    assert chosen(None) == ["d1", "d2", "d3", "d4"]
    assert chosen(6) == ["d2", "d3"] and chosen(8) == ["d2", "d3"]  # whole documents only
    assert chosen(9) == ["d2", "d3", "d4"]
    assert chosen(6, always=("d1",)) == ["d1", "d2"]  # held-out documents first, inside the budget
    assert chosen(3, always=("d1", "d4")) == ["d1", "d4"]  # and always, even beyond it
    assert chosen(6, depth=2) == ["d2", "d3", "d4"]  # the first two candidates of each document
    assert chosen(6, depth=2, always=("d1",)) == ["d1", "d2"]  # held-out documents keep all theirs
    randomly = chosen(6, by="random")
    assert len(randomly) == 2 and randomly == chosen(6, by="random")  # seeded
    with pytest.raises(ValueError, match="budget and budget_depth must be at least 1"):
        mining.MineConfig(budget=0)


def test_budget_depth_below_the_training_list_is_a_config_error(tmp_path: Path) -> None:
    cold_start = REPO / "pipelines" / "cold-start.toml"  # list_size = 5
    budget = ("--set", "mine.budget=100", "--set", "mine.budget_depth=4", "--run-dir", str(tmp_path / "run"))
    assert_one_line_error(eztag("run", str(cold_start), *budget), "'--set mine.budget_depth'", "list_size 5")
    assert not (tmp_path / "run").exists()
