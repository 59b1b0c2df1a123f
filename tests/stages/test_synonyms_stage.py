"""The synonyms stage through a whole pipeline: tiny random LLM, multi-vector index, ConSE tagging, cache reuse
(of generations and of the built index)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from eztag.pipeline import Pipeline
from eztag.prompts import synonym_messages
from eztag.stages import synonyms as synonyms_stage
from tests.conftest import pipeline_file


def test_synonyms_pipeline(tmp_path: Path, small_inputs: tuple[Path, Path], tiny_llama_dir: Path) -> None:
    documents, labels = small_inputs
    extra = (
        f'[synonyms]\nmodel = "{tiny_llama_dir}"\nn = 3\nmax_new_tokens = 8\nmax_chars = 200\nprune_eps = 2.5\n'
        f'refine_threshold = -1.0\nrefine_top_m = 2\ncache_dir = "{tmp_path / "cache"}"\n'
        '[synonyms.options]\ndevice = "cpu"\n'
        f'[index]\naggregation = "local_centre"\nlocal_k = 2\noverfetch = 2\ncache = "{tmp_path / "index-cache"}"\n'
        "[tag]\nk = 3\n[tag.conse]\ntop = 2\nalpha = 0.3\ntemperature = 0.1\n"
    )
    stages = '"ingest", "encode", "synonyms", "index", "tag", "evaluate"'
    pipeline = Pipeline.load(pipeline_file(tmp_path, documents, labels, extra, stages))
    run_dir = tmp_path / "run"
    summaries = pipeline.run(run_dir)

    synonyms = pl.read_parquet(run_dir / "synonyms" / "synonyms.parquet")
    assert synonyms.columns == ["label_id", "synonym", "kept", "reason", "agreement"]
    assert set(synonyms["label_id"]) <= {"audio", "video", "devel", "game"}
    kept = synonyms.filter("kept")
    assert kept.height == summaries["synonyms"]["extra_vectors"] > 0
    assert kept["agreement"].drop_nans().min() >= -1.0
    owners = np.load(run_dir / "synonyms" / "owners.npy")
    assert len(owners) == 4 + kept.height and owners[:4].tolist() == [0, 1, 2, 3]
    assert summaries["index"]["vectors"] == len(owners) and summaries["index"]["labels"] == 4
    assert summaries["index"]["from_cache"] is False
    tags = pl.read_parquet(run_dir / "tag" / "tags.parquet")
    assert tags.group_by("doc_id").len()["len"].to_list() == [3] * 6
    assert "P@1" in summaries["evaluate"]["metrics"]

    shards = sorted((tmp_path / "cache").glob("part-*.parquet"))
    rerun = pipeline.run(run_dir, force=["synonyms"])
    assert sorted((tmp_path / "cache").glob("part-*.parquet")) == shards, "a cached generation was redone"
    assert pl.read_parquet(run_dir / "synonyms" / "synonyms.parquet").equals(synonyms)
    assert rerun["index"]["from_cache"] is True  # the same vectors and owners: the multi-vector index is copied
    assert pl.read_parquet(run_dir / "tag" / "tags.parquet").equals(tags)


def test_bare_label_prompt_has_no_empty_group_and_keys_differ_by_description() -> None:
    """A bare label (no description, as in debtags' bare variant) is asked about without an empty "Tag group:" line;
    the same label with and without a description are two cache entries."""
    bare = synonym_messages("accessible via at spi", "", 5, "software package")[1]["content"]
    described = synonym_messages("accessible via at spi", "Accessibility Support", 5, "software package")[1]["content"]
    assert "Tag group" not in bare and bare.startswith("Tag: accessible via at spi\n\nWrite 5 ")
    assert "Tag group: Accessibility Support\n\nWrite 5 " in described
    config = synonyms_stage.Config()
    keys = {synonyms_stage.cache_key(config, "accessible via at spi", d) for d in ("", "Accessibility Support")}
    assert len(keys) == 2
