"""Label semantics on hand-made vectors: local-centre scoring, ε-component pruning, refinement and ConSE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eztag import semantics
from eztag.embeddings import EmbeddingStore
from eztag.indexes.exact import ExactIndex
from eztag.indexes.multi import MultiVectorIndex


def degrees(*angles: float) -> np.ndarray:
    """Unit vectors in the plane at the given angles."""
    radians = np.deg2rad(angles)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def test_local_centre_on_hand_made_vectors() -> None:
    # one label: vectors at 0°, 10°, 90°; the query sits at 5°
    padded = degrees(0, 10, 90)[None]
    mask = np.ones((1, 3), dtype=bool)
    query = degrees(5)
    local = semantics.label_scores(query, padded, mask, "local_centre", local_k=2)
    # the two nearest (0° and 10°) have their mean at 5°: cosine 1
    assert local[0, 0] == pytest.approx(1.0, abs=1e-6)
    maximum = semantics.label_scores(query, padded, mask, "max")
    assert maximum[0, 0] == pytest.approx(np.cos(np.deg2rad(5)), abs=1e-6)
    centroid = semantics.label_scores(query, padded, mask, "centroid")
    centre = padded[0].mean(axis=0)
    assert centroid[0, 0] == pytest.approx(float(query[0] @ centre / np.linalg.norm(centre)), abs=1e-6)
    # k = 1 is max, k >= the set size is the centroid
    assert semantics.label_scores(query, padded, mask, "local_centre", local_k=1)[0, 0] == pytest.approx(maximum[0, 0])
    assert semantics.label_scores(query, padded, mask, "local_centre", local_k=5)[0, 0] == pytest.approx(centroid[0, 0])


def test_local_centre_ignores_padding_and_ranks_labels() -> None:
    vectors = np.vstack([degrees(0, 80, 100), degrees(40)])
    owners = np.array([0, 0, 0, 1])
    padded, mask = semantics.pad_label_sets(vectors, owners, 2)
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    query = degrees(85)
    scores = semantics.label_scores(query, padded, mask, "local_centre", local_k=2)
    # label 0's two nearest (80°, 100°) are centred at 90°; label 1 has one vector at 40°
    np.testing.assert_allclose(scores[0], [np.cos(np.deg2rad(5)), np.cos(np.deg2rad(45))], atol=1e-6)
    # the centroid of label 0 is dragged towards 0° and loses to max
    assert semantics.label_scores(query, padded, mask, "centroid")[0, 0] < scores[0, 0]


def test_pruning_keeps_the_connected_component() -> None:
    # a chain 0° - 20° - 40° (steps of cosine distance 0.06) and two outliers at 120° and 130°
    vectors = degrees(0, 20, 40, 120, 130)
    eps = 1 - np.cos(np.deg2rad(25))
    assert semantics.prune_component(vectors, eps).tolist() == [True, True, True, False, False]
    # from an outlier, only the outliers are connected
    assert semantics.prune_component(vectors, eps, root=4).tolist() == [False, False, False, True, True]
    # a tiny ε keeps only the root, a huge one keeps everything
    assert semantics.prune_component(vectors, 1e-9).tolist() == [True, False, False, False, False]
    assert semantics.prune_component(vectors, 3.0).all()


def test_conse_weights_sum_to_one_and_special_cases() -> None:
    rng = np.random.default_rng(0)
    scores = np.sort(rng.standard_normal((4, 3)), axis=1)[:, ::-1]
    for temperature in (0.01, 0.1, 1.0, 10.0):
        weights = semantics.conse_weights(scores, temperature)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0)
        assert (weights >= 0).all()
    labels = semantics.unit(rng.standard_normal((6, 5))).astype(np.float32)
    queries = semantics.unit(rng.standard_normal((4, 5))).astype(np.float32)
    top_rows = np.argsort(-(queries @ labels.T), axis=1)[:, :3]
    top_scores = np.take_along_axis(queries @ labels.T, top_rows, axis=1)
    # T = 1, alpha = 1: the top label's own vector; alpha = 0: the query itself
    one = semantics.conse_queries(queries, top_scores[:, :1], top_rows[:, :1], labels, alpha=1.0, temperature=0.1)
    np.testing.assert_allclose(one, labels[top_rows[:, 0]], atol=1e-6)
    none = semantics.conse_queries(queries, top_scores, top_rows, labels, alpha=0.0, temperature=0.1)
    np.testing.assert_allclose(none, queries, atol=1e-6)
    # T = 1, any alpha: the normalised mix of the query and its top label
    half = semantics.conse_queries(queries, top_scores[:, :1], top_rows[:, :1], labels, alpha=0.5, temperature=1.0)
    np.testing.assert_allclose(half, semantics.unit(queries + labels[top_rows[:, 0]]), atol=1e-6)


def test_refinement_drops_the_synonym_that_disagrees_with_the_data() -> None:
    # three labels whose pseudo-positive documents sit at 0°, 60° and 120°
    centroids = degrees(0, 60, 120)
    documents = np.repeat(centroids, 2, axis=0)
    top_rows = np.repeat(np.arange(3), 2)[:, None]
    found, counts = semantics.data_centroids(documents, top_rows, 3)
    np.testing.assert_allclose(found, centroids, atol=1e-6)
    assert counts.tolist() == [2, 2, 2]
    # label 0's synonyms: one near its data (at 10°), one near label 2's data (at 130°)
    agreement = semantics.profile_agreement(degrees(10, 130), np.array([0, 0]), found, counts > 0)
    assert agreement[0] > 0.9 > -0.9 > agreement[1]
    assert np.isnan(semantics.profile_agreement(degrees(10), np.array([0]), found, np.array([False, True, True])))[0]


def test_sanitise_cleans_generations() -> None:
    raw = '1. Braille\n2- "Braille" -\n- screen reader - reads the screen\n\nAccessibility\n'
    raw += "x" * 80 + "\nvoice\nsix"
    out = semantics.sanitise(raw, "Accessibility", n=2, max_chars=60)
    assert out == [
        ("Braille", None),
        ("Braille", "duplicate"),
        ("screen reader", None),
        ("Accessibility", "copy_of_label"),
        ("x" * 80, "too_long"),
        ("voice", "over_n"),
        ("six", "over_n"),
    ]


@pytest.mark.parametrize("aggregation", ["max", "centroid", "local_centre"])
def test_multi_vector_index_matches_exhaustive_scoring(tmp_path: Path, aggregation: str) -> None:
    rng = np.random.default_rng(1)
    vectors = semantics.unit(rng.standard_normal((90, 8))).astype(np.float32)
    owners = np.concatenate([np.arange(30), rng.integers(0, 30, 60)])
    store = EmbeddingStore(tmp_path / "vectors")
    store.write(list(range(90)), lambda rows: vectors[list(rows)], chunk_size=16)
    index = MultiVectorIndex(ExactIndex(device="cpu"), owners, aggregation=aggregation, overfetch=100, batch_size=7)
    index.build(store)
    queries = semantics.unit(rng.standard_normal((11, 8))).astype(np.float32)
    scores, rows = index.search(queries, 5)
    want_scores, want_rows = index.exhaustive(queries, 5)
    np.testing.assert_allclose(scores, want_scores, atol=1e-6)
    np.testing.assert_array_equal(rows, want_rows)
    padded, mask = semantics.pad_label_sets(vectors, owners, 30)
    brute = semantics.label_scores(queries, padded, mask, aggregation)
    np.testing.assert_allclose(np.take_along_axis(brute, rows, axis=1), scores, atol=1e-6)
    index.save(tmp_path)
    inner = ExactIndex.load(tmp_path, device="cpu")
    loaded = MultiVectorIndex.load(tmp_path, inner=inner, aggregation=aggregation, overfetch=100, batch_size=7)
    np.testing.assert_array_equal(loaded.search(queries, 5)[1], rows)


def test_multi_vector_index_over_faiss_equals_over_exact(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    from eztag.indexes.faiss import FaissIndex

    rng = np.random.default_rng(2)
    vectors = semantics.unit(rng.standard_normal((60, 8))).astype(np.float32)
    owners = np.concatenate([np.arange(20), rng.integers(0, 20, 40)])
    store = EmbeddingStore(tmp_path / "vectors")
    store.write(list(range(60)), lambda rows: vectors[list(rows)], chunk_size=16)
    queries = semantics.unit(rng.standard_normal((9, 8))).astype(np.float32)
    found = []
    for inner in (ExactIndex(device="cpu"), FaissIndex(factory="Flat", device="cpu")):
        index = MultiVectorIndex(inner, owners, aggregation="local_centre", local_k=2)
        index.build(store)
        found.append(index.search(queries, 4))
    np.testing.assert_allclose(found[0][0], found[1][0], atol=1e-5)
    np.testing.assert_array_equal(found[0][1], found[1][1])
