"""Chunked exact search against brute-force numpy top-k, with tiny chunks and awkward sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eztag.embeddings import EmbeddingStore
from eztag.indexes.exact import ExactIndex


def store_of(tmp_path: Path, vectors: np.ndarray, chunk_size: int) -> EmbeddingStore:
    store = EmbeddingStore(tmp_path / "labels")
    store.write(list(range(len(vectors))), lambda rows: vectors[list(rows)], chunk_size=chunk_size)
    return store


def brute_force(queries: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ labels.T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


@pytest.mark.parametrize(
    ("n_labels", "store_chunk", "label_chunk", "query_batch", "k"),
    [
        (103, 10, 7, 5, 5),  # n not divisible by either chunk size
        (103, 17, 7, 4, 20),  # k > label chunk size
        (50, 8, 3, 7, 64),  # k > number of labels
        (1, 1, 1, 1, 3),
        (3001, 700, 300, 16, 50),  # chunks wider than the CPU's gate block, merges every few chunks
    ],
)
def test_chunked_equals_brute_force(
    tmp_path: Path, n_labels: int, store_chunk: int, label_chunk: int, query_batch: int, k: int
) -> None:
    rng = np.random.default_rng(n_labels + k)
    labels = rng.standard_normal((n_labels, 16)).astype(np.float32)
    queries = rng.standard_normal((23, 16)).astype(np.float32)
    index = ExactIndex(device="cpu", label_chunk_size=label_chunk, query_batch_size=query_batch)
    index.build(store_of(tmp_path, labels, store_chunk))
    scores, rows = index.search(queries, k)
    want_scores, want_rows = brute_force(queries, labels, min(k, n_labels))
    assert scores.shape == rows.shape == want_rows.shape
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    assert [set(r) for r in rows] == [set(r) for r in want_rows]  # continuous scores: no ties at the boundary

    index.save(tmp_path)
    loaded = ExactIndex.load(tmp_path, device="cpu", label_chunk_size=label_chunk, query_batch_size=query_batch)
    assert isinstance(loaded.parts[0], np.memmap)
    np.testing.assert_array_equal(loaded.search(queries, k)[1], rows)


@pytest.mark.parametrize(("label_chunk", "query_batch", "threads"), [(4, 2, 1), (7, 9, 2), (61, 9, 1), (100, 1, 2)])
def test_ties_go_to_the_lower_row_whatever_the_chunking_and_threads(
    tmp_path: Path, label_chunk: int, query_batch: int, threads: int
) -> None:
    """With many equal scores (ties inside the top k and across its k-th place) the answer is numpy's stable
    argsort: ties ordered by row, so two engines chunking or threading differently write the same tags."""
    rng = np.random.default_rng(1)
    labels = rng.integers(-1, 2, size=(61, 4)).astype(np.float32)  # few distinct scores: ties everywhere
    labels[30:40] = labels[5]  # duplicate labels, in a later chunk
    queries = rng.integers(-1, 2, size=(9, 4)).astype(np.float32)
    index = ExactIndex(device="cpu", precision="float32", label_chunk_size=label_chunk, query_batch_size=query_batch)
    index.build(store_of(tmp_path, labels, 6))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        scores, rows = index.search(queries, 10)
    finally:
        torch.set_num_threads(before)
    want_scores, want_rows = brute_force(queries, labels, 10)
    np.testing.assert_array_equal(scores, want_scores)
    np.testing.assert_array_equal(rows, want_rows)


@pytest.mark.parametrize(("label_chunk", "k"), [(300, 10), (300, 150), (128, 40), (1000, 7)])
def test_blocks_gated_by_their_maximum_keep_every_tie_across_merges(tmp_path: Path, label_chunk: int, k: int) -> None:
    """Chunks wider than the CPU's gate block (whole blocks and a partial one), candidates merged every few chunks
    against a k-th best that is older than the chunk: with scores tied everywhere and duplicates of early labels
    after several merges, still numpy's stable argsort."""
    rng = np.random.default_rng(3)
    labels = rng.integers(-1, 2, size=(3000, 6)).astype(np.float32)
    labels[2500:2600] = labels[100:200]  # duplicates past CPU_MERGE_EVERY chunks of 300
    queries = rng.integers(-1, 2, size=(9, 6)).astype(np.float32)
    index = ExactIndex(device="cpu", precision="float32", label_chunk_size=label_chunk, query_batch_size=4)
    index.build(store_of(tmp_path, labels, 700))
    scores, rows = index.search(queries, k)
    want_scores, want_rows = brute_force(queries, labels, k)
    np.testing.assert_array_equal(scores, want_scores)
    np.testing.assert_array_equal(rows, want_rows)


@pytest.mark.parametrize(("n_labels", "label_chunk"), [(200, 16), (3000, 256)])
def test_every_later_chunk_wins(tmp_path: Path, n_labels: int, label_chunk: int) -> None:
    """Labels growing in norm, so each chunk's scores beat all earlier ones: the worst case for candidates above
    the k-th best (every score of every chunk is one)."""
    rng = np.random.default_rng(2)
    direction = rng.standard_normal(16).astype(np.float32)
    labels = direction * np.arange(1, n_labels + 1, dtype=np.float32)[:, None]
    labels = (labels + rng.standard_normal((n_labels, 16)) * 0.01).astype(np.float32)
    queries = (direction + rng.standard_normal((5, 16)) * 0.01).astype(np.float32)
    index = ExactIndex(device="cpu", label_chunk_size=label_chunk, query_batch_size=5)
    index.build(store_of(tmp_path, labels, 50))
    scores, rows = index.search(queries, 30)
    want_scores, want_rows = brute_force(queries, labels, 30)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
    np.testing.assert_array_equal(rows, want_rows)


@pytest.mark.parametrize(("columns", "block", "k"), [(1000, 8, 10), (1003, 16, 5), (64, 8, 8), (40, 8, 7), (977, 1, 3)])
def test_block_topk_equals_torch_topk_with_ties_and_duplicates(columns: int, block: int, k: int) -> None:
    """The GPU path's two-stage selection (block maxima, then the best blocks) against torch.topk: the same scores,
    and the same set of columns wherever the k-th score is not tied; planted duplicates, ties across the k-th place,
    a whole block of equal maxima, and a partial last block."""
    import torch

    from eztag.indexes.exact import block_topk

    generator = torch.Generator().manual_seed(columns + k)
    scores = torch.randn(33, columns, generator=generator).half()  # fp16, as on the GPU
    scores[0, :] = 0.5  # every column tied
    scores[1, 3 * block : 4 * block] = 9.0  # a block of equal maxima, larger than k when block > k
    scores[2, -1] = 20.0  # the best score in the partial last block (or the last block)
    scores[3, ::7] = 4.0  # duplicates spread over many blocks, more than k of them
    scores[4, : 2 * k] = scores[4].max()  # ties across the k-th place
    got_scores, got_columns = block_topk(scores, k, block=block)
    want_scores, want_columns = torch.topk(scores, k, dim=1)
    torch.testing.assert_close(got_scores, want_scores, rtol=0, atol=0)
    assert torch.equal(torch.gather(scores, 1, got_columns), got_scores)  # the columns hold those scores
    assert all(len(set(row.tolist())) == k for row in got_columns)  # no column twice
    for row in range(len(scores)):
        kth = want_scores[row, -1]
        if (scores[row] == kth).sum() == (want_scores[row] == kth).sum():  # no tie at the k-th place
            assert set(got_columns[row].tolist()) == set(want_columns[row].tolist())


def test_streamed_topk_takes_each_chunk_once_for_all_query_batches() -> None:
    """The GPU path for labels in host memory, on CPU tensors: the label chunks come from a generator, so a
    second pass would find none; every query batch (sizes 7, 1 and 12) still gets brute force's top k, over
    chunks that do not divide the labels and k larger than a chunk; with planted duplicates, brute force's scores and
    every label above its k-th score (which of the duplicates tied there comes back depends on the host's rounding)."""
    from eztag.indexes.exact import streamed_topk

    rng = np.random.default_rng(3)
    labels = rng.standard_normal((101, 16)).astype(np.float32)
    labels[60:70] = labels[2]  # duplicates: ties in some queries' top k
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    queries[19] = labels[2]
    taken: list[int] = []

    def chunks(size: int):
        for start in range(0, len(labels), size):
            taken.append(start)
            yield start, torch.from_numpy(labels[start : start + size])

    batches = [torch.from_numpy(queries[:7]), torch.from_numpy(queries[7:8]), torch.from_numpy(queries[8:])]
    results = streamed_topk(batches, chunks(9), 15)
    assert taken == list(range(0, 101, 9))
    scores = torch.cat([best_scores for best_scores, _ in results]).numpy()
    rows = torch.cat([best_rows for _, best_rows in results]).numpy()
    want_scores, _ = brute_force(queries, labels, 15)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    all_scores = queries @ labels.T
    np.testing.assert_allclose(np.take_along_axis(all_scores, rows, axis=1), scores, rtol=1e-5, atol=1e-5)
    for query, taken in enumerate(rows):  # duplicates across the k-th place: any of them, chunk rounding decides
        assert len(set(taken)) == 15
        kth = want_scores[query, -1]
        assert set(np.flatnonzero(all_scores[query] > kth + 1e-5)) <= set(taken)
        assert (all_scores[query, taken] >= kth - 1e-5).all()


def test_label_memory_options_that_cannot_hold_are_one_line_errors() -> None:
    """label_memory "device" asks for a GPU; selection "triton" cannot stream labels from host memory."""
    from eztag.errors import EztagError

    with pytest.raises(EztagError, match="label_memory 'device' is for a GPU"):
        ExactIndex(device="cpu", label_memory="device")
    with pytest.raises(EztagError, match="selection 'triton' needs the labels resident"):
        ExactIndex(device="cpu", selection="triton", precision="float32", label_memory="host")
