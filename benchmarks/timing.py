"""Timing shared by the benchmark scripts: device-synchronised wall time and a measured matrix-product peak."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def sync() -> None:
    """Wait for the GPU's queued work, if there is a GPU."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """(wall seconds, result) of `fn`, with the GPU's work before and inside it finished."""
    sync()
    started = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - started, out


def matmul_peak_tflops(device: str, dtype: torch.dtype, size: int) -> float:
    """The best of 5 timings of 10 square products of `size` in `dtype`: the peak the run's TFLOP/s are set against."""
    left, right = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    best = min(timed(lambda: [left @ right for _ in range(10)])[0] for _ in range(5))
    return 2 * size**3 * 10 / best / 1e12
