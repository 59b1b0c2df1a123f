"""The index cache: a run over the same label vectors copies the built index instead of building it again."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import polars as pl

from eztag.entry_caches import prune
from eztag.indexing import load_index
from eztag.pipeline import Pipeline
from tests.conftest import pipeline_file
from tests.support.locks import waited_for

STAGES = '"ingest", "encode", "index", "tag"'


def hnsw_pipeline(folder: Path, small_inputs: tuple[Path, Path], cache: Path | None) -> Path:
    """FOLDER/pipeline.toml: a FAISS HNSW pipeline over the small inputs, with an index cache unless `cache` is None
    (`extra` lands after [encode])."""
    folder.mkdir(exist_ok=True)
    extra = '\n[index]\nbackend = "faiss"\n' + (f'cache = "{cache}"\n' if cache else "")
    extra += '[index.options]\nfactory = "HNSW8"\nef_search = 16\n[tag]\nk = 3\n'
    return pipeline_file(folder, *small_inputs, extra=extra, stages=STAGES)


def entries(cache: Path) -> list[str]:
    """The cache's built indexes (not their lock and slot files)."""
    return sorted(path.name for path in cache.iterdir() if path.is_dir() and not path.name.startswith("."))


def test_index_cache_spares_rebuilding_and_keys_what_changes_a_build(
    tmp_path: Path, small_inputs: tuple[Path, Path]
) -> None:
    documents, _ = small_inputs
    cache = tmp_path / "index-cache"
    pipeline = hnsw_pipeline(tmp_path, small_inputs, cache)
    assert Pipeline.load(pipeline).run(tmp_path / "night-1")["index"]["from_cache"] is False
    assert len(entries(cache)) == 1

    documents.write_text(documents.read_text() + '{"id": "d7", "text": "A new chess engine"}\n')
    second = Pipeline.load(pipeline).run(tmp_path / "night-2")["index"]
    assert second["from_cache"] is True
    assert second["recall_sample"] == 7  # recall measured on this run's documents, not copied
    night1, night2 = (tmp_path / night / "index" for night in ("night-1", "night-2"))
    assert (night1 / "index.faiss").read_bytes() == (night2 / "index.faiss").read_bytes()
    uncached = Pipeline.load(hnsw_pipeline(tmp_path / "no-cache", small_inputs, None)).run(tmp_path / "uncached")
    assert uncached["index"]["from_cache"] is False
    assert pl.read_parquet(night2.parent / "tag" / "tags.parquet").equals(
        pl.read_parquet(tmp_path / "uncached" / "tag" / "tags.parquet")
    )

    searched = Pipeline.load(pipeline, ["index.options.ef_search=64"]).run(tmp_path / "ef-64")["index"]
    assert searched["from_cache"] is True  # a search option: the same build serves it
    assert load_index(tmp_path / "ef-64" / "index").ef_search == 64

    rebuilt = Pipeline.load(pipeline, ["index.options.factory='HNSW16'"]).run(tmp_path / "hnsw16")["index"]
    assert rebuilt["from_cache"] is False
    relabelled = Pipeline.load(pipeline, ["encode.label_template='{text}: {description}'"]).run(tmp_path / "labels")
    assert relabelled["index"]["from_cache"] is False
    assert len(entries(cache)) == 3


def test_a_run_waits_for_the_build_of_the_same_index_and_copies_it(
    tmp_path: Path, small_inputs: tuple[Path, Path]
) -> None:
    """A run finding another process building its index waits for it (a real lock, released by kill -9), then
    copies what that process put in the cache instead of building it again."""
    cache = tmp_path / "index-cache"
    pipeline = hnsw_pipeline(tmp_path, small_inputs, cache)
    Pipeline.load(pipeline).run(tmp_path / "night-1")
    (entry,) = entries(cache)
    (cache / entry).rename(tmp_path / "built-elsewhere")
    night_2 = ["run", str(pipeline), "--run-dir", str(tmp_path / "night-2")]

    def put_back() -> None:  # what the holder built
        (tmp_path / "built-elsewhere").rename(cache / entry)

    waited_for(cache / f".{entry}.lock", "exclusive", night_2, while_held=put_back)
    assert json.loads((tmp_path / "night-2" / "index" / "report.json").read_text())["from_cache"] is True
    assert entries(cache) == [entry]


def test_a_changed_label_set_updates_the_cached_index_within_the_limit(
    tmp_path: Path, small_inputs: tuple[Path, Path]
) -> None:
    """A changed label set adds its new vectors to the cached HNSW index of the earlier set and hides the vectors of
    labels renamed (tags as a fresh build's); past `update_limit` it builds anew; pruning removes the slot files."""
    _, labels = small_inputs
    cache = tmp_path / "index-cache"
    pipeline = hnsw_pipeline(tmp_path, small_inputs, cache)
    Pipeline.load(pipeline).run(tmp_path / "night-1")
    (entry,) = entries(cache)
    (slots,) = cache.glob(f"{entry}.*.slots.parquet")
    slots.unlink()  # as an entry built before slot files: the next run that takes it whole writes one
    assert Pipeline.load(pipeline).run(tmp_path / "night-2")["index"]["from_cache"] is True
    assert slots.exists()

    lines = labels.read_text().splitlines()
    renamed = lines[1].replace('"Video"', '"Video and film"')
    labels.write_text("\n".join([lines[0], renamed, *lines[2:], '{"id": "science", "text": "Science"}']) + "\n")
    week_ago = time.time() - 7 * 86_400
    os.utime(cache / entry, (week_ago, week_ago))
    updated = Pipeline.load(pipeline, ["index.update_limit=0.9"]).run(tmp_path / "night-3")["index"]
    assert updated["from_cache"] is False
    assert (cache / entry).stat().st_mtime > week_ago + 86_400  # the entry updated counts as used
    assert updated["updated_from"] == {"entry": entry, "slots": 6, "added": 2, "stale": 1}  # renamed, added
    fresh = Pipeline.load(hnsw_pipeline(tmp_path / "no-cache", small_inputs, None)).run(tmp_path / "fresh")
    assert fresh["index"]["updated_from"] is None
    tags = [pl.read_parquet(tmp_path / run / "tag" / "tags.parquet") for run in ("night-3", "fresh")]
    assert tags[0].equals(tags[1])
    again = Pipeline.load(pipeline).run(tmp_path / "night-4")["index"]
    assert again["from_cache"] is True  # the updated index is the changed set's entry
    assert pl.read_parquet(tmp_path / "night-4" / "tag" / "tags.parquet").equals(tags[0])

    labels.write_text(labels.read_text().replace('"Games"', '"Video games"'))
    rebuilt = Pipeline.load(pipeline).run(tmp_path / "night-5")["index"]
    assert rebuilt["from_cache"] is False and rebuilt["updated_from"] is None  # 3 of 7 slots changed: past 0.1
    assert len(entries(cache)) == 3 and len(list(cache.glob("*.slots.parquet"))) == 3
    prune(cache, 0)
    assert entries(cache) == [] and list(cache.glob("*.slots.parquet")) == []
