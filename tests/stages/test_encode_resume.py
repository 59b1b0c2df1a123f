"""A killed encode resumes: the finished store equals an uninterrupted one byte for byte; the label cache."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from eztag.embeddings import EmbeddingStore
from eztag.pipeline import Pipeline
from tests.conftest import pipeline_file

TEXTS = [f"text {i}" for i in range(23)]


class Killed(Exception):
    pass


class FakeEncoder:
    """Deterministic vectors from the text; counts calls; raises after `fail_after` calls when set."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.calls: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if self.fail_after is not None and len(self.calls) == self.fail_after:
            raise Killed
        self.calls.append(list(texts))
        seeds = [int(text.split()[1]) for text in texts]
        return np.stack([np.random.default_rng(seed).standard_normal(8) for seed in seeds]).astype(np.float32)


def files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_resumed_store_equals_uninterrupted(tmp_path: Path) -> None:
    whole = EmbeddingStore(tmp_path / "whole")
    whole.write(TEXTS, FakeEncoder(), chunk_size=5)

    resumed = EmbeddingStore(tmp_path / "resumed")
    with pytest.raises(Killed):
        resumed.write(TEXTS, FakeEncoder(fail_after=3), chunk_size=5)
    assert not (resumed.directory / "meta.json").exists()
    assert sorted(path.name for path in resumed.directory.glob("chunk-*.npy")) == [
        f"chunk-{i:05d}.npy" for i in range(3)
    ]
    second = FakeEncoder()
    resumed.write(TEXTS, second, chunk_size=5)

    assert second.calls == [TEXTS[15:20], TEXTS[20:23]]  # only the two missing chunks
    assert files(resumed.directory) == files(whole.directory)
    np.testing.assert_array_equal(resumed.load(), whole.load())


def test_label_cache_spares_re_encoding_labels(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    """A second run with new documents copies the label vectors from the cache; a label set that changed encodes
    only its new texts, taking the others' vectors from the cache's earlier sets."""
    documents, labels = small_inputs
    cache = tmp_path / "label-cache"
    extra = f'label_cache = "{cache}"\n'  # goes into the [encode] table
    first = Pipeline.load(pipeline_file(tmp_path, documents, labels, extra=extra, stages='"ingest", "encode"'))
    report = first.run(tmp_path / "night-1")["encode"]
    assert (report["labels_from_cache"], report["labels_encoded"]) == (False, 4)
    documents.write_text(documents.read_text() + '{"id": "d7", "text": "A new chess engine"}\n')
    second = Pipeline.load(first.path)
    report = second.run(tmp_path / "night-2")["encode"]
    assert (report["labels_from_cache"], report["labels_encoded"]) == (True, 0)
    night1, night2 = (EmbeddingStore(tmp_path / night / "encode" / "labels") for night in ("night-1", "night-2"))
    assert np.array_equal(night1.load(), night2.load())
    assert EmbeddingStore(tmp_path / "night-2" / "encode" / "documents").count == 7
    assert len(stores(cache)) == 1

    # one label renamed and one added before the others: two texts to encode, three to take from night 1's set
    rows = [json.loads(line) for line in labels.read_text().splitlines()]
    rows[1]["text"] = "Video and film"
    changed = [{"id": "chess", "text": "Chess"}, *rows]
    labels.write_text("".join(json.dumps(row) + "\n" for row in changed))
    (source,) = stores(cache)
    os.utime(source, (0, 0))  # last used long ago: night 3 takes vectors from it, so it counts as used now
    report = Pipeline.load(first.path).run(tmp_path / "night-3")["encode"]
    assert (report["labels_from_cache"], report["labels_encoded"]) == (False, 2)
    assert source.stat().st_mtime > time.time() - 3_600  # `prune-cache` keeps it
    night3 = EmbeddingStore(tmp_path / "night-3" / "encode" / "labels").load()
    np.testing.assert_array_equal(night3[[1, 3, 4]], night1.load()[[0, 2, 3]])  # audio, devel, game: cached
    (tmp_path / "fresh").mkdir()
    fresh = Pipeline.load(pipeline_file(tmp_path / "fresh", documents, labels, stages='"ingest", "encode"'))
    fresh.run(tmp_path / "fresh-run")
    np.testing.assert_allclose(night3, EmbeddingStore(tmp_path / "fresh-run" / "encode" / "labels").load(), atol=1e-6)
    assert len(stores(cache)) == 2 and not list(cache.glob(".*.new"))

    template = Pipeline.load(first.path, ["encode.label_template='{text}: {description}'"])
    assert template.run(tmp_path / "night-4")["encode"]["labels_encoded"] == len(changed)  # every text is new
    assert len(stores(cache)) == 3

    for store in stores(cache):  # entries deleted by hand, their digest files left: nothing to take, no error
        shutil.rmtree(store)
    assert Pipeline.load(first.path).run(tmp_path / "night-5")["encode"]["labels_encoded"] == len(changed)


def stores(cache: Path) -> list[Path]:
    """The label cache's vector stores (not their digest files)."""
    return [path for path in cache.iterdir() if path.is_dir()]
