"""Exact top-k without a score matrix: a Triton matrix product whose epilogue keeps only the scores that can be in
a query's top k (issue 35).

The torch path writes every [queries, labels] score matrix to memory and reads it back to select (10^12 scores at
10^7 labels; on an H200 135-167 TFLOP/s of the 758 peak, exact-h200.md). Here each query first gets a threshold, the
k-th best score over a strided sample of the labels (every SAMPLE_STRIDE-th row, searched by torch): at least k
labels score at or above it. `scores_above` then computes every [queries, labels] tile in registers and writes out
only the scores at or above their query's threshold (about k x SAMPLE_STRIDE of them per query, not all N), with
their rows; the top k of those is the answer (ExactIndex, `selection = "triton"`). When a query's candidates fit (at
least k, at most the capacity), every label left out scores below all of them, so the result is exact for the
kernel's float32 scores.

On a CUDA GPU the kernel is compiled; on the CPU it runs in Triton's interpreter (TRITON_INTERPRET=1 set before
triton is imported), which is how the tests check it without a GPU. Speed on a GPU: not yet measured
(benchmarks/gpu_scale.py measures it beside the torch path).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import triton
import triton.language as tl

SAMPLE_STRIDE = 16  # one label in 16 sets the threshold: ~16 x k candidates per query when labels are in any order
BLOCK_M, BLOCK_N, BLOCK_D = 64, 128, 64  # queries x labels per tile, dimensions per step of the product


def _scores_above(
    queries,
    labels,
    thresholds,
    counts,
    out_scores,
    out_rows,
    n_queries: int,
    n_labels: int,
    dim: int,
    capacity: int,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
) -> None:
    """One [BLOCK_M queries, BLOCK_N labels] tile of scores; those at or above their query's threshold are appended
    to its row of `out_scores`/`out_rows` (slots claimed with an atomic add on `counts`, never past `capacity`)."""
    program = tl.program_id(0)
    query_blocks = tl.cdiv(n_queries, BLOCK_M)
    # queries vary fastest: consecutive programs share a label tile, read from memory once for all query blocks
    query_rows = (program % query_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    label_rows = (program // query_blocks).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    scores = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, dim, BLOCK_D):
        dims = start + tl.arange(0, BLOCK_D)
        query_tile = tl.load(
            queries + query_rows[:, None] * dim + dims[None, :],
            mask=(query_rows[:, None] < n_queries) & (dims[None, :] < dim),
            other=0.0,
        )
        label_tile = tl.load(
            labels + label_rows[None, :] * dim + dims[:, None],
            mask=(label_rows[None, :] < n_labels) & (dims[:, None] < dim),
            other=0.0,
        )
        scores = tl.dot(query_tile, label_tile, scores, input_precision="ieee")
    threshold = tl.load(thresholds + query_rows, mask=query_rows < n_queries, other=float("inf"))
    keep = (scores >= threshold[:, None]) & (label_rows[None, :] < n_labels)
    kept = tl.sum(keep.to(tl.int32), axis=1)
    if tl.max(kept, axis=0) > 0:  # most tiles hold no candidate and write nothing
        first = tl.atomic_add(counts + query_rows, kept, mask=kept > 0)
        slots = first[:, None] + tl.cumsum(keep.to(tl.int32), axis=1) - 1
        written = keep & (slots < capacity)
        places = query_rows[:, None].to(tl.int64) * capacity + slots
        tl.store(out_scores + places, scores, mask=written)
        tl.store(out_rows + places, label_rows[None, :] + tl.zeros_like(slots).to(tl.int64), mask=written)


@functools.cache
def _kernel() -> Any:
    """The kernel compiled by Triton, or run by its interpreter where that is on (CPU tensors, tests)."""
    if interpreter_enabled():
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(_scores_above)
    return triton.jit(_scores_above)


def interpreter_enabled() -> bool:
    """Whether Triton runs kernels in its interpreter, the only way they run on a CPU: TRITON_INTERPRET=1 must be
    set before triton is first imported (its own library functions are made interpreted or compiled then)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros_like, InterpretedFunction)


def scores_above(
    queries: torch.Tensor, labels: torch.Tensor, thresholds: torch.Tensor, capacity: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scores float32 [queries, capacity] padded with -inf, label rows int64 padded with -1, candidates per query):
    every label scoring at or above its query's threshold, in no particular order, at most `capacity` kept."""
    queries, labels = queries.contiguous(), labels.contiguous()
    n_queries, dim = queries.shape
    counts = torch.zeros(n_queries, dtype=torch.int32, device=queries.device)
    out_scores = torch.full((n_queries, capacity), -torch.inf, dtype=torch.float32, device=queries.device)
    out_rows = torch.full((n_queries, capacity), -1, dtype=torch.int64, device=queries.device)
    grid = (triton.cdiv(n_queries, BLOCK_M) * triton.cdiv(len(labels), BLOCK_N),)
    _kernel()[grid](
        queries,
        labels,
        thresholds.float().contiguous(),
        counts,
        out_scores,
        out_rows,
        n_queries,
        len(labels),
        dim,
        capacity,
        BLOCK_M=BLOCK_M,
        BLOCK_N=BLOCK_N,
        BLOCK_D=BLOCK_D,
    )
    return out_scores, out_rows, counts
