"""A killed encode resumes: the finished store equals an uninterrupted one byte for byte."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from eztag.embeddings import EmbeddingStore

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
