"""Exact search: chunked matrix product + top-k with torch, on the CPU (memory-mapped) or a CUDA GPU (resident).

On the CPU (10^6 x 384 labels, 1,000 queries, 2 cores) copying each chunk out of its memory map took 30% of the
search and the top-k over each [queries, chunk] score matrix 27% of the rest (torch's CPU top-k copies each row
into (score, index) pairs and partially sorts them). So chunks are views of the memory map, and after the first
chunk only the scores above each query's current k-th best are candidates; with labels in any non-adversarial order
few pass, so the top-k runs on a handful of candidates per query. Finding them with a comparison pass and a nonzero
over every score, and merging after every chunk, took as long as the matrix products themselves (2 cores, 10^6
labels); `scores_above` compares only the blocks whose maximum passes, and candidates merge every few chunks.

On a GPU the matrix product runs near its peak and `torch.topk` over each [queries, chunk] score matrix took 90% of
the search (H200, 10^5 x 10^6 labels: 0.94 s, 82 TFLOP/s). `block_topk` selects in two stages instead: the maximum
of each block of SELECT_BLOCK columns (one read of the scores), the k best blocks, then the top-k of those blocks'
scores only. With `selection = "triton"` no score matrix is written at all (eztag/indexes/fused_topk.py): the
product's epilogue keeps only the scores above a threshold found on a sample of the labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from eztag.artifacts import atomic_path
from eztag.devices import pick_device, pick_dtype
from eztag.embeddings import EmbeddingStore
from eztag.errors import EztagError, missing_extra
from eztag.indexes import LabelIndex
from eztag.registry import lazy_module
from eztag.safe_writes import write_npy_rows

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_module("torch")  # loaded when first used, not when a configuration is checked

FILE = "labels.npy"
GPU_LABEL_CHUNK, CPU_LABEL_CHUNK = 262_144, 4096
GPU_QUERY_BATCH, CPU_QUERY_BATCH = 4096, 1024
SELECT_BLOCK = 256  # columns per block in block_topk
CPU_GATE_BLOCK = 128  # columns per block whose maximum gates the comparison pass on the CPU (scores_above)
CPU_MERGE_EVERY = 8  # label chunks whose candidates are gathered before one merge into the k best on the CPU
Selection = Literal["auto", "torch", "triton"]
LabelMemory = Literal["auto", "device", "host"]


def block_topk(
    scores: torch.Tensor, k: int, dim: int = 1, block: int = SELECT_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-k scores, their columns) of each row, as `torch.topk` gives them up to the order of ties, from the k
    blocks of `block` columns with the highest maxima: every score above a row's k-th best lies in one of those
    blocks (each such block holds one of the fewer than k scores above it), so the result is exact. Rows only
    (`dim` 1), as in `torch.topk(scores, k, dim=1)`."""
    assert dim == 1 and scores.dim() == 2
    rows, columns = scores.shape
    blocks = columns // block
    if blocks <= k:
        return torch.topk(scores, min(k, columns), dim=1)
    grouped = scores[:, : blocks * block].view(rows, blocks, block)
    chosen = torch.topk(grouped.amax(dim=2), k, dim=1).indices
    candidates = torch.gather(grouped, 1, chosen[:, :, None].expand(-1, -1, block)).reshape(rows, k * block)
    offsets = torch.arange(block, device=scores.device)
    candidate_columns = (chosen[:, :, None] * block + offsets).reshape(rows, k * block)
    if blocks * block < columns:  # the last, partial block is always a candidate
        candidates = torch.cat([candidates, scores[:, blocks * block :]], dim=1)
        tail = torch.arange(blocks * block, columns, device=scores.device).expand(rows, -1)
        candidate_columns = torch.cat([candidate_columns, tail], dim=1)
    top_scores, order = torch.topk(candidates, k, dim=1)
    return top_scores, torch.gather(candidate_columns, 1, order)


def merge_topk(
    best_scores: torch.Tensor, best_rows: torch.Tensor, scores: torch.Tensor, rows: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two candidate lists per query into the k best, ordered by score and, among equal scores, by row: the
    same answer whatever order the candidates came in (torch.topk orders ties as its threads happen to)."""
    all_rows, by_row = torch.sort(torch.cat([best_rows, rows], dim=1), dim=1)
    all_scores = torch.cat([best_scores, scores], dim=1).gather(1, by_row)
    top_scores, order = torch.sort(all_scores, dim=1, descending=True, stable=True)
    return top_scores[:, :k], all_rows.gather(1, order[:, :k])


Candidates = list[tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]]  # parts of (query, score, label row) lists


def merge_candidates(
    best_scores: torch.Tensor, best_rows: torch.Tensor, candidates: Candidates, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge candidates, flat (query, score, label row) lists in any order, into the k-best lists: they are laid
    out one row per query (padded with -inf) and merged by `merge_topk`."""
    queries, scores, rows = (torch.cat(column) for column in zip(*candidates, strict=True))
    if len(queries) == 0:
        return best_scores, best_rows
    order = torch.argsort(queries, stable=True)
    queries, scores, rows = queries[order], scores[order], rows[order]
    counts = torch.bincount(queries, minlength=len(best_scores))
    slots = torch.arange(len(queries)) - (torch.cumsum(counts, 0) - counts)[queries]
    width = int(counts.max())
    laid_scores = torch.full((len(best_scores), width), -torch.inf, dtype=torch.float32)
    laid_scores[queries, slots] = scores.float()
    laid_rows = torch.full((len(best_scores), width), -1, dtype=torch.int64)
    laid_rows[queries, slots] = rows
    return merge_topk(best_scores, best_rows, laid_scores, laid_rows, k)


def scores_above(
    scores: torch.Tensor, thresholds: torch.Tensor, offset: int, block: int = CPU_GATE_BLOCK
) -> Candidates:
    """Every score above its query's threshold ([queries, 1]) as candidates, label rows counted from `offset`.
    Each block of `block` columns is compared only when its maximum passes: one reduction over the scores instead
    of a comparison pass and a nonzero over all of them (on 2 CPU cores those took as long as the matrix product)."""
    queries, columns = scores.shape
    whole = columns // block * block
    found: Candidates = []
    if whole:
        grouped = scores[:, :whole].view(queries, whole // block, block)
        rows, blocks = torch.nonzero(grouped.amax(dim=2) > thresholds, as_tuple=True)
        values = grouped[rows, blocks]
        hits, within = torch.nonzero(values > thresholds[rows], as_tuple=True)
        found.append((rows[hits], values[hits, within], offset + blocks[hits] * block + within))
    if whole < columns:
        tail = scores[:, whole:]
        rows, within = torch.nonzero(tail > thresholds, as_tuple=True)
        found.append((rows, tail[rows, within], offset + whole + within))
    return found


def streamed_topk(
    batches: Sequence[torch.Tensor], chunks: Iterable[tuple[int, torch.Tensor]], k: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Exact top-k (float32 scores, rows) of each query batch over label chunks (first row, [rows, dim]) on a GPU,
    each chunk taken once for all the batches (labels streamed from host memory cross to the GPU once): the chunk's
    `block_topk` per batch in the matmul's dtype (no float32 copy of the score matrix), merged by `merge_topk`."""
    best = [
        (
            torch.empty((len(batch), 0), device=batch.device, dtype=torch.float32),
            torch.empty((len(batch), 0), device=batch.device, dtype=torch.int64),
        )
        for batch in batches
    ]
    for offset, chunk in chunks:
        for number, batch in enumerate(batches):
            top_scores, top_rows = block_topk(batch @ chunk.T, min(k, len(chunk)), dim=1)
            best[number] = merge_topk(*best[number], top_scores.float(), top_rows + offset, k)
    return best


def block_topk_chunks(
    batch: torch.Tensor, chunks: Iterable[tuple[int, torch.Tensor]], k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`streamed_topk` of one query batch."""
    return streamed_topk([batch], chunks, k)[0]


def _check_triton(cpu: bool, dtype: torch.dtype) -> None:
    """selection = "triton" needs Triton, and on the CPU its interpreter (tests), which has no bfloat16 (numpy has
    none: its products come out wrong): a one-line error otherwise."""
    try:
        import triton  # noqa: F401
    except ImportError:
        raise missing_extra("triton", "gpu") from None
    from eztag.indexes.fused_topk import interpreter_enabled

    if cpu and not interpreter_enabled():
        raise EztagError(
            "index selection 'triton' needs a CUDA GPU (on the CPU only Triton's interpreter runs it, for tests: "
            "TRITON_INTERPRET=1 before triton is imported)",
            field="index.options",
        )
    if cpu and dtype == torch.bfloat16:
        message = "Triton's interpreter computes bfloat16 products wrongly; use float32"
        raise EztagError(message, field="index.precision")


class ExactIndex(LabelIndex):
    """Exact inner-product top-k. On the CPU the label matrix stays in memory-mapped `.npy` parts and is read
    `label_chunk_size` rows at a time, so memory is bounded. On a GPU it is resident in fp16/bf16 when it fits beside
    the search's working memory (`label_memory` "auto"; "device" insists); otherwise ("host") its chunks cross from
    pinned host memory, each once per `search` call, for all the call's queries. Defaults: 262,144 label rows and
    4,096 queries per product on a GPU, 4,096 and 1,024 on the CPU (score matrices of 16 MiB instead of 4 GiB)."""

    exact = True

    def __init__(
        self,
        *,
        device: str = "auto",
        precision: str = "auto",
        label_chunk_size: int | None = None,
        query_batch_size: int | None = None,
        selection: Selection = "auto",
        label_memory: LabelMemory = "auto",
    ) -> None:
        self.device = pick_device(device)
        self.dtype = pick_dtype(precision, self.device)
        cpu = self.device.type == "cpu"
        self.label_chunk_size = label_chunk_size or (CPU_LABEL_CHUNK if cpu else GPU_LABEL_CHUNK)
        self.query_batch_size = query_batch_size or (CPU_QUERY_BATCH if cpu else GPU_QUERY_BATCH)
        self.selection = "torch" if selection == "auto" else selection  # triton: not yet timed on a GPU
        if cpu and label_memory == "device":
            message = "label_memory 'device' is for a GPU: on the CPU the labels stay memory-mapped"
            raise EztagError(message, field="index.options")
        if self.selection == "triton" and label_memory == "host":
            message = "selection 'triton' needs the labels resident on the GPU: use label_memory 'auto' or 'device'"
            raise EztagError(message, field="index.options")
        if self.selection == "triton":
            _check_triton(cpu, self.dtype)
        self.label_memory = label_memory
        self.parts: list[np.ndarray] = []
        self.resident: torch.Tensor | None = None
        self.sample: torch.Tensor | None = None  # selection triton: the labels that set each query's threshold

    @property
    def count(self) -> int:
        return sum(len(part) for part in self.parts)

    def set_labels(self, parts: Iterable[np.ndarray]) -> None:
        """Index these label vectors, [rows, dim] arrays in order: the parts are kept (memory maps stay on disk),
        and on a GPU copied into one resident matrix if `_resident` says so."""
        self.parts = list(parts)
        if self.device.type == "cuda" and self._resident():
            self.resident = torch.empty((self.count, self.parts[0].shape[1]), dtype=self.dtype, device=self.device)
            offset = 0
            for part in self.parts:
                for start in range(0, len(part), self.label_chunk_size):
                    block = torch.from_numpy(np.array(part[start : start + self.label_chunk_size]))
                    self.resident[offset : offset + len(block)] = block.pin_memory().to(self.device, self.dtype)
                    offset += len(block)

    def _resident(self) -> bool:
        """Whether the label matrix goes into GPU memory: with `label_memory` "auto", when it fits in the free
        memory beside three query-batch x label-chunk score matrices (the search's working memory)."""
        if self.label_memory != "auto":
            return self.label_memory == "device"
        itemsize = torch.finfo(self.dtype).bits // 8
        working = 3 * self.query_batch_size * self.label_chunk_size * itemsize
        fits = self.count * self.parts[0].shape[1] * itemsize + working <= torch.cuda.mem_get_info(self.device)[0]
        if not fits and self.selection == "triton":
            message = f"selection 'triton' needs the labels resident on the GPU, and {self.count:,} labels do not fit"
            raise EztagError(message, field="index.options")
        return fits

    def _label_chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, chunk on the device) over the whole label matrix; from host memory to a GPU through a pinned
        copy, so the transfer runs while the GPU works on the previous chunk."""
        if self.resident is not None:
            for offset in range(0, len(self.resident), self.label_chunk_size):
                yield offset, self.resident[offset : offset + self.label_chunk_size]
            return
        offset = 0
        for part in self.parts:
            for start in range(0, len(part), self.label_chunk_size):
                with warnings.catch_warnings():  # a read-only memory map: the tensor views it, nothing writes to it
                    warnings.simplefilter("ignore", UserWarning)
                    block = torch.from_numpy(part[start : start + self.label_chunk_size])
                if self.device.type == "cuda":
                    block = torch.empty(block.shape, dtype=block.dtype, pin_memory=True).copy_(block)
                    block = block.to(self.device, non_blocking=True)
                yield offset + start, block.to(self.device, self.dtype)
            offset += len(part)

    def build(self, labels: EmbeddingStore) -> None:
        self.set_labels(labels.iter_chunks())

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.parts, "build or load the index first"
        k = min(k, self.count)
        starts = range(0, len(queries), self.query_batch_size)
        batches = [
            torch.from_numpy(np.array(queries[start : start + self.query_batch_size], dtype=np.float32)).to(
                self.device, self.dtype
            )
            for start in starts
        ]
        if self.device.type == "cuda" and self.resident is None:  # streamed: each label chunk crosses once
            results: Iterable[tuple[torch.Tensor, torch.Tensor]] = streamed_topk(batches, self._label_chunks(), k)
        else:
            results = (self._batch_topk(batch, k) for batch in batches)
        out_scores = np.empty((len(queries), k), dtype=np.float32)
        out_rows = np.empty((len(queries), k), dtype=np.int64)
        for start, (best_scores, best_rows) in zip(starts, results, strict=True):
            out_scores[start : start + len(best_scores)] = best_scores.cpu().numpy()
            out_rows[start : start + len(best_rows)] = best_rows.cpu().numpy()
        return out_scores, out_rows

    def _batch_topk(self, batch: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-k of one query batch, by the selection and device."""
        if self.selection == "triton":
            return self._fused_topk(batch, k)
        if self.device.type == "cpu":
            return self._cpu_topk(batch, k)
        return block_topk_chunks(batch, self._label_chunks(), k)

    def _cpu_topk(self, batch: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-k over memory-mapped label chunks: once k are known, only the scores above each query's k-th
        best are candidates (`scores_above`), gathered over CPU_MERGE_EVERY chunks and merged at once (a k-th best
        as old as that only lets more candidates in)."""
        best_scores = torch.empty((len(batch), 0), dtype=torch.float32)
        best_rows = torch.empty((len(batch), 0), dtype=torch.int64)
        pending: Candidates = []
        for number, (offset, chunk) in enumerate(self._label_chunks(), start=1):
            scores = batch @ chunk.T
            if best_scores.shape[1] < k:
                # every score at or above the chunk's k-th best: ties at the k-th place go to the lower rows
                kth = torch.topk(scores, min(k, len(chunk)), dim=1).values[:, -1:]
                queries, columns = torch.nonzero(scores >= kth, as_tuple=True)
                found = [(queries, scores[queries, columns], offset + columns)]
                best_scores, best_rows = merge_candidates(best_scores, best_rows, found, k)
                continue
            pending += scores_above(scores, best_scores[:, -1:], offset)
            if number % CPU_MERGE_EVERY == 0:
                best_scores, best_rows = merge_candidates(best_scores, best_rows, pending, k)
                pending = []
        if pending:
            best_scores, best_rows = merge_candidates(best_scores, best_rows, pending, k)
        return best_scores, best_rows

    def _fused_topk(self, batch: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-k through the Triton kernel (fused_topk.py): thresholds from the sample's k-th best scores,
        candidates at or above them, their top k; queries whose candidates do not fit are searched by the torch
        path again (their scores rounded to the label dtype, as that path gives them)."""
        from eztag.indexes.fused_topk import SAMPLE_STRIDE, scores_above

        labels = self.resident if self.resident is not None else torch.cat([c for _, c in self._label_chunks()])
        if self.sample is None:
            self.sample = labels[::SAMPLE_STRIDE].contiguous()
        capacity = 4 * k * SAMPLE_STRIDE
        if len(self.sample) < k or capacity >= len(labels):  # a threshold would leave nearly every label in
            return block_topk_chunks(batch, [(0, labels)], k)
        kth = block_topk_chunks(batch, [(0, self.sample)], k)[0][:, -1]
        # the torch path rounds scores to the label dtype, the kernel keeps float32: lower the bar by that rounding
        thresholds = kth - 2 * torch.finfo(self.dtype).eps * kth.abs() - 1e-6
        scores, rows, counts = scores_above(batch, labels, thresholds, capacity)
        width = min(capacity, max(k, int(counts.max())))
        best_scores, best_rows = merge_topk(scores[:, :0], rows[:, :0], scores[:, :width], rows[:, :width], k)
        redo = torch.nonzero((counts < k) | (counts > capacity), as_tuple=True)[0]
        if len(redo):
            best_scores[redo], best_rows[redo] = block_topk_chunks(batch[redo], self._label_chunks(), k)
        return best_scores, best_rows

    def save(self, directory: Path) -> None:
        """Write all parts into one float32 `labels.npy`, part by part (never the whole matrix in memory), through
        ordinary writes with the space reserved first: a full disk is an error, not a SIGBUS."""
        assert self.parts, "build the index first"
        shape = (self.count, self.parts[0].shape[1])
        with atomic_path(directory / FILE) as tmp, open(tmp, "wb") as handle:
            write_npy_rows(handle, self.parts, shape, np.dtype(np.float32))

    @classmethod
    def load(cls, directory: Path, **options: Any) -> ExactIndex:
        index = cls(**options)
        index.set_labels([np.load(directory / FILE, mmap_mode="r")])
        return index
