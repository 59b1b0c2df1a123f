"""Device and precision: the validated choices shared by the encoder, index, judge and distil settings.

`device`: "auto" (the first CUDA GPU when there is one, else the CPU), "cpu", "cuda" or "cuda:N".
`precision`: "float32", "float16", "bfloat16" or "auto". "auto" means float32 on the CPU and float16 on a GPU,
except where a backend declares bfloat16 as its GPU default (LLM judges and training, whose activations and
gradients need float32's range): `pick_dtype(..., gpu_auto="bfloat16")`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from eztag.errors import EztagError, did_you_mean

if TYPE_CHECKING:  # torch is imported when a device is picked, not when a config is checked
    import torch

PRECISIONS = ("auto", "float32", "float16", "bfloat16")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
SPEED_FLAGS = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"})
"""The CPU flags that decide how fast float32 and bfloat16 matrix products run (the ones benchmarks print)."""


def cpu_flags() -> set[str]:
    """The CPU feature flags of this host (/proc/cpuinfo; empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def host_line() -> str:
    """'CPU only (N cores; flags)': a CPU benchmark's host, with the flags that decide bfloat16 speed."""
    return f"CPU only ({os.cpu_count()} cores; {' '.join(sorted(SPEED_FLAGS & cpu_flags())) or 'no flags read'})"


def bf16_gemm_speedup(size: int = 512, repeats: int = 20) -> float:
    """How many times faster a bfloat16 matrix product is than a float32 one on this CPU, measured now (interleaved,
    the second pass kept; about a second on 2 AVX512_BF16 cores, 131 s on an AVX2-only CPU that emulates bf16, where
    `auto_dtype` does not call it). CPUs with the same flags differ: 2.2x on an AMD EPYC with AVX512_BF16, 0.55-0.7x
    on an AVX512_BF16 host without AMX (docs/judges.md, Speed); 0.0074x on that AVX2-only AMD EPYC."""
    import time

    import torch

    seconds: dict[torch.dtype, float] = {}
    for dtype in (torch.float32, torch.bfloat16) * 2:
        left, right = torch.randn(size, 3 * size, dtype=dtype), torch.randn(3 * size, 3 * size, dtype=dtype)
        left @ right
        begun = time.perf_counter()
        for _ in range(repeats):
            left @ right
        seconds[dtype] = time.perf_counter() - begun
    return seconds[torch.float32] / seconds[torch.bfloat16]


def check_device(device: str, *, field: str = "device") -> str:
    """`device` when it is auto, cpu, cuda or cuda:N; otherwise a one-line error naming `field`."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        hint = did_you_mean(str(device), ("auto", "cpu", "cuda"))
        raise EztagError(f"unknown device '{device}'{hint}; expected auto, cpu, cuda or cuda:N", field=field)
    return device


def check_precision(precision: str, *, field: str = "precision", allowed: tuple[str, ...] = PRECISIONS) -> str:
    """`precision` when it is one of `allowed`; otherwise a one-line error naming `field`."""
    if precision not in allowed:
        raise EztagError(f"unknown precision '{precision}'{did_you_mean(str(precision), allowed)}", field=field)
    return precision


def pick_device(device: str, *, field: str = "device") -> torch.device:
    """The torch device for a validated `device`; asking for CUDA without a visible GPU is a one-line error."""
    import torch

    check_device(device, field=field)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EztagError(
            f"device '{device}' asks for a CUDA GPU, but none is visible; use 'auto' or 'cpu'", field=field
        )
    return torch.device(device)


def pick_dtype(
    precision: str, device: torch.device, *, gpu_auto: str = "float16", field: str = "precision"
) -> torch.dtype:
    """The torch dtype for a validated `precision`: 'auto' is float32 on the CPU and `gpu_auto` on a GPU."""
    import torch

    check_precision(precision, field=field)
    if precision == "auto":
        precision = gpu_auto if device.type == "cuda" else "float32"
    dtype: torch.dtype = getattr(torch, precision)
    return dtype
