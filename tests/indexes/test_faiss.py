"""FAISS indexes on real MiniLM vectors: Flat equals exact, HNSW/IVF recall, size estimates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eztag.errors import EztagError
from eztag.indexes.exact import ExactIndex
from eztag.indexes.faiss import FaissIndex, estimate_bytes
from eztag.indexing import recall_against_exact
from tests.indexes.conftest import store_of

pytestmark = pytest.mark.xdist_group("faiss")  # one worker: the module fixture encodes once


faiss = pytest.importorskip("faiss")


def test_flat_equals_exact(tmp_path: Path, vectors) -> None:
    documents, labels = vectors
    store = store_of(tmp_path / "labels", labels)
    flat = FaissIndex(factory="Flat", device="cpu")
    flat.build(store)
    exact = ExactIndex(device="cpu", label_chunk_size=64)
    exact.build(store)
    flat_scores, flat_rows = flat.search(documents, 10)
    exact_scores, exact_rows = exact.search(documents, 10)
    np.testing.assert_allclose(flat_scores, exact_scores, atol=1e-5)
    # equal sets, up to near-ties at rank 10: any row swapped in scores within 1e-5 of the 10th best
    true_scores = documents @ labels.T
    for query, (found, truth) in enumerate(zip(flat_rows, exact_rows, strict=True)):
        swapped = list(set(found) ^ set(truth))
        assert np.all(np.abs(true_scores[query, swapped] - exact_scores[query, -1]) < 1e-5)
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(flat_rows, exact_rows, strict=True)]) >= 0.99


@pytest.mark.parametrize(
    ("factory", "options", "floor"),
    [
        ("HNSW32", {"ef_search": 128}, 0.95),
        ("HNSW16", {"ef_search": 128, "ef_construction": 80}, 0.95),
        ("IVF16,Flat", {"nprobe": 4}, 0.7),
        ("IVF16,Flat", {"nprobe": 16}, 0.99),
    ],
)
def test_approximate_recall(tmp_path: Path, vectors, factory: str, options: dict, floor: float) -> None:
    documents, labels = vectors
    store = store_of(tmp_path / "labels", labels)
    index = FaissIndex(factory=factory, device="cpu", **options)
    index.build(store)
    recall = recall_against_exact(index, store, documents, [10])
    print(factory, options, recall)
    assert recall["recall@10"] >= floor


def test_set_search_equals_a_rebuild_with_that_setting(tmp_path: Path, vectors) -> None:
    documents, labels = vectors
    store = store_of(tmp_path / "labels", labels)
    swept = FaissIndex(factory="IVF16,Flat", device="cpu", nprobe=1)
    swept.build(store)
    narrow = swept.search(documents, 10)
    swept.set_search(nprobe=16)
    rebuilt = FaissIndex(factory="IVF16,Flat", device="cpu", nprobe=16)
    rebuilt.build(store)
    wide = swept.search(documents, 10)
    np.testing.assert_array_equal(wide[1], rebuilt.search(documents, 10)[1])
    assert not np.array_equal(wide[1], narrow[1])  # the setting took effect: 16 of 16 lists searched, not 1


def test_ef_construction_needs_hnsw(tmp_path: Path, vectors) -> None:
    index = FaissIndex(factory="IVF16,Flat", device="cpu", ef_construction=80)
    with pytest.raises(EztagError, match="ef_construction needs an HNSW factory"):
        index.build(store_of(tmp_path / "labels", vectors[1]))


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF128,Flat", "IVF128,PQ32", "IVF128,SQ8"])
def test_estimate_within_30_percent(tmp_path: Path, factory: str) -> None:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((20_000, 384)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    index = FaissIndex(factory=factory, device="cpu", train_size=5_000)
    index.build(store_of(tmp_path / "labels", matrix))
    real = len(faiss.serialize_index(index.index))
    estimate = estimate_bytes(factory, len(matrix), 384)
    assert abs(estimate - real) / real <= 0.3, (factory, estimate, real)
