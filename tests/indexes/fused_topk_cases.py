"""The Triton exact top-k (eztag/indexes/fused_topk.py) in Triton's interpreter on the CPU, against torch; run by
tests/indexes/test_fused_topk.py in a process started with TRITON_INTERPRET=1 (it must be set before triton is first
imported, which another test may already have done in a test worker). The kernel alone (which scores it writes,
over awkward shapes, with a full candidate buffer), and the whole selection
through ExactIndex (ties across the k-th place, duplicates past the buffer that send a query back to the torch path,
too few labels for a threshold). bfloat16 is not checked here: the interpreter computes it wrongly (numpy has none)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eztag.errors import EztagError
from eztag.indexes import INDEXES
from eztag.indexes.exact import ExactIndex
from eztag.indexes.fused_topk import SAMPLE_STRIDE, interpreter_enabled, scores_above

assert interpreter_enabled(), "run with TRITON_INTERPRET=1 set before triton is imported (test_fused_topk.py)"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_writes_exactly_the_scores_above_each_threshold(dtype: torch.dtype) -> None:
    """37 queries x 700 labels x 72 dimensions (none a multiple of the 64 x 128 x 64 tiles): each query's row holds
    exactly the labels whose float32 product reaches its threshold, with those scores; with a buffer of 3 the count
    still says how many there were, and the 3 written are among them."""
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(37, 72, generator=generator).to(dtype)
    labels = torch.randn(700, 72, generator=generator).to(dtype)
    reference = queries.float() @ labels.float().T
    ranked = torch.sort(reference, dim=1, descending=True).values
    wanted = 1 + torch.arange(37) % 9  # 1 to 9 candidates per query
    thresholds = (ranked.gather(1, wanted[:, None] - 1) + ranked.gather(1, wanted[:, None]))[:, 0] / 2

    scores, rows, counts = scores_above(queries, labels, thresholds, capacity=16)
    assert counts.tolist() == wanted.tolist()
    for query in range(37):
        kept = rows[query, : wanted[query]]
        assert set(kept.tolist()) == set(torch.nonzero(reference[query] >= thresholds[query]).flatten().tolist())
        torch.testing.assert_close(scores[query, : wanted[query]], reference[query, kept], rtol=1e-5, atol=1e-5)
        assert (rows[query, wanted[query] :] == -1).all() and (scores[query, wanted[query] :] == -torch.inf).all()

    _, small_rows, small_counts = scores_above(queries, labels, thresholds, capacity=3)
    assert small_counts.tolist() == wanted.tolist()
    for query in range(37):
        written = small_rows[query][small_rows[query] >= 0].tolist()
        assert len(written) == min(3, int(wanted[query]))
        assert set(written) <= set(rows[query, : wanted[query]].tolist())


def brute_force(queries: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top k by score, equal scores by row (numpy's stable argsort)."""
    scores = queries @ labels.T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


def test_fused_selection_equals_brute_force_with_ties_and_duplicates() -> None:
    """Small integer vectors (exact float32 products, ties everywhere) among 6,000 labels: 700 copies of one label
    overflow the candidate buffer (4 x k x SAMPLE_STRIDE = 640 at k = 10) of every query they top, which then go
    back to the torch path (exact up to the order of ties); copies of label 7 sit across query 1's k-th place. The
    scores equal numpy's; where the candidates fit, so do the rows, ties ordered by row."""
    rng = np.random.default_rng(3)
    labels = rng.integers(-2, 3, size=(6000, 16)).astype(np.float32)
    labels[1000:1700] = 3.0  # 700 copies
    labels[4000:4012] = labels[7]  # 12 copies of label 7, tied with it
    queries = rng.integers(-2, 3, size=(20, 16)).astype(np.float32)
    queries[0] = 1.0
    queries[1] = labels[7]
    index = ExactIndex(device="cpu", selection="triton", query_batch_size=8)
    index.set_labels([labels[:2500], labels[2500:]])
    scores, rows = index.search(queries, 10)
    want_scores, want_rows = brute_force(queries, labels, 10)
    np.testing.assert_array_equal(scores, want_scores)
    all_scores = queries @ labels.T
    np.testing.assert_array_equal(np.take_along_axis(all_scores, rows, axis=1), scores)  # the rows hold them
    overflowing = (all_scores >= want_scores[:, -1:]).sum(axis=1) > 4 * 10 * SAMPLE_STRIDE
    assert overflowing[0] and overflowing.sum() < len(queries) - 5
    np.testing.assert_array_equal(rows[~overflowing], want_rows[~overflowing])
    assert rows[1].tolist() == [7, *range(4000, 4009)]
    assert index.sample is not None and len(index.sample) == len(range(0, 6000, SAMPLE_STRIDE))


def test_fused_selection_with_few_labels_and_float16() -> None:
    """Too few labels for a threshold (the torch path answers), and float16 labels: the same rows as float32
    brute force over the float16 values, and scores within float16 rounding."""
    rng = np.random.default_rng(4)
    labels = rng.standard_normal((3000, 24)).astype(np.float16).astype(np.float32)
    queries = rng.standard_normal((9, 24)).astype(np.float16).astype(np.float32)
    for count, k in ((150, 20), (3000, 5)):
        index = ExactIndex(device="cpu", selection="triton", precision="float16")
        index.set_labels([labels[:count]])
        scores, rows = index.search(queries, k)
        want_scores, want_rows = brute_force(queries, labels[:count], k)
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_allclose(scores, want_scores, rtol=2e-3, atol=2e-3)


def test_selection_errors_are_one_line() -> None:
    """An unknown selection, and bfloat16 in the interpreter."""
    with pytest.raises(EztagError, match="selection"):
        INDEXES.check_options("exact", {"selection": "fused"}, field="index.options")
    with pytest.raises(EztagError, match="Triton's interpreter computes bfloat16") as error:
        ExactIndex(device="cpu", selection="triton", precision="bfloat16")
    assert "\n" not in str(error.value)
