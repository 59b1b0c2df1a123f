"""Updating a FAISS index for a changed label set: on real MiniLM vectors, an updated index searches like exact
search over the new set (stale slots never returned), through a save and a load; vectors pair with slots one to one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from eztag.embeddings import EmbeddingStore, gather_rows
from eztag.index_updates import numbered, pair_with, vector_digests
from eztag.indexes.exact import ExactIndex
from eztag.indexes.faiss import FaissIndex
from eztag.indexing import IndexConfig, built_index, cached_index
from tests.indexes.conftest import store_of

pytestmark = pytest.mark.xdist_group("faiss")  # one worker: the module fixture encodes once

faiss = pytest.importorskip("faiss")


def changed_set(labels: np.ndarray, newcomers: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The labels with 20 removed, 10 given new vectors and 15 added, in a shuffled order; and how many vectors an
    update of the old set's index adds (25) and hides (30)."""
    rng = np.random.default_rng(0)
    kept = np.delete(labels, rng.choice(len(labels), 20, replace=False), axis=0)
    kept[:10] = newcomers[:10]
    changed = np.concatenate([kept, newcomers[10:25]])
    return changed[rng.permutation(len(changed))], 25, 30


def assert_same_as_exact(documents: np.ndarray, labels: EmbeddingStore, scores: np.ndarray, rows: np.ndarray) -> None:
    """`scores` and `rows` are exact top-k search over `labels`, up to near-ties at the last rank."""
    exact = ExactIndex(device="cpu")
    exact.build(labels)
    exact_scores, exact_rows = exact.search(documents, rows.shape[1])
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)
    true_scores = documents @ labels.load().T
    for query, (found, truth) in enumerate(zip(rows, exact_rows, strict=True)):
        swapped = list(set(found) ^ set(truth))
        assert np.all(np.abs(true_scores[query, swapped] - exact_scores[query, -1]) < 1e-5)


@pytest.mark.parametrize(
    ("factory", "options"),
    [("Flat", {}), ("IDMap,Flat", {}), ("IVF8,Flat", {"nprobe": 8}), ("HNSW16", {"ef_search": 512})],
)
def test_an_updated_index_searches_the_changed_set_and_never_returns_a_stale_slot(
    tmp_path: Path, vectors, factory: str, options: dict
) -> None:
    documents, labels = vectors
    old = store_of(tmp_path / "old", labels)
    base = FaissIndex(factory=factory, device="cpu", **options)
    base.build(old)
    base.save(tmp_path / "base")
    changed, added, stale = changed_set(labels, documents[:25])
    new = store_of(tmp_path / "new", changed)

    update = pair_with(tmp_path / "base", vector_digests(old), numbered(vector_digests(new), "row"))
    assert (len(update.added_rows), update.stale, len(update.slot_rows)) == (added, stale, len(labels) + added)
    updated = FaissIndex.load(tmp_path / "base", factory=factory, device="cpu", **options)
    updated.update(gather_rows(new, update.added_rows), update.slot_rows)
    assert updated.index.ntotal == len(labels) + added  # appended to the old index, not built anew

    queries = documents[25:]
    scores, rows = updated.search(queries, 10)
    assert_same_as_exact(queries, new, scores, rows)
    updated.save(tmp_path / "updated")
    reloaded = FaissIndex.load(tmp_path / "updated", factory=factory, device="cpu", **options)
    np.testing.assert_array_equal(reloaded.search(queries, 10)[1], rows)

    if updated.exact:  # asked for every slot: each label row of the new set once, then nothing
        _, every = reloaded.search(queries[:3], len(update.slot_rows))
        assert every.shape[1] == len(changed)
        for found in every:
            assert sorted(found) == list(range(len(changed)))


def test_vectors_pair_with_slots_one_to_one_duplicates_in_order(tmp_path: Path) -> None:
    def digests(*names: bytes) -> pl.DataFrame:
        return pl.DataFrame({"digest": [name.ljust(16, b".") for name in names]}, schema={"digest": pl.Binary})

    # slots: a a b c; rows: c a a a d -> slots 3 0 1 hold rows 0 1 2, rows 3 and 4 are new slots 4 and 5, slot 2 stale
    slots, rows = digests(b"a", b"a", b"b", b"c"), digests(b"c", b"a", b"a", b"a", b"d")
    update = pair_with(tmp_path, slots, numbered(rows, "row"))
    assert update.slot_rows.tolist() == [1, 2, -1, 0, 3, 4]
    assert update.added_rows.tolist() == [3, 4]
    assert update.slot_digests["digest"].to_list() == digests(b"a", b"a", b"b", b"c", b"a", b"d")["digest"].to_list()
    assert update.summary() == {"entry": tmp_path.name, "slots": 6, "added": 2, "stale": 1}
    assert update.changed_fraction == 3 / 6


def test_a_multi_vector_index_is_updated_through_its_inner_index(tmp_path: Path, vectors) -> None:
    """With synonyms (two vectors per label here), the cache updates the inner FAISS index and the labels' vector
    sets come from the new set: the same search as a fresh build."""
    documents, labels = vectors
    config = IndexConfig(backend="faiss", options={"factory": "Flat"}, update_limit=0.5)
    (tmp_path / "cache").mkdir()
    old = store_of(tmp_path / "old", labels)
    cached_index(tmp_path / "cache", config, old, np.arange(len(labels)) // 2, tmp_path / "night-1")
    changed, added, stale = changed_set(labels, documents[:25])
    new, owners = store_of(tmp_path / "new", changed), np.arange(len(changed)) // 2
    index, provenance = cached_index(tmp_path / "cache", config, new, owners, tmp_path / "night-2")
    assert provenance["updated_from"]["added"] == added and provenance["updated_from"]["stale"] == stale

    scores, rows = index.search(documents[25:], 10)
    fresh_scores, fresh_rows = built_index(config, new, owners).search(documents[25:], 10)
    np.testing.assert_allclose(scores, fresh_scores, atol=1e-6)
    np.testing.assert_array_equal(rows, fresh_rows)
