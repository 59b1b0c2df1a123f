"""GPU scale benchmark: encoding labels/s and exact top-100 search as achieved TFLOP/s. NOT RUN YET.

This script was written on a CPU-only machine and has never been executed on a GPU; its figures come from a
later session on a device. One command:

    python benchmarks/gpu_scale.py --out benchmarks/results/

- encoding: eztag's encoder (bucketed, background tokeniser, pinned copies, fp16 autocast, batch 1024) vs plain
  `SentenceTransformer.encode` with its defaults (batch 32, fp32 weights), on the same generated label phrases.
- exact search: 10^6 and 10^7 labels x 10^5 documents, top-100, labels resident in bf16 (ExactIndex); achieved
  TFLOP/s = 2 * docs * labels * dim / seconds, against a bf16 GEMM peak measured in the same run.
Label/document vectors for search are random unit vectors (search cost does not depend on their values).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scale import environment, phrases, vocabulary

from eztag.encoders.sentence_transformers import SentenceTransformerEncoder
from eztag.indexes.exact import ExactIndex

K = 100


def gemm_peak_tflops(size: int = 8192, repeats: int = 20) -> float:
    """Best achieved bf16 GEMM TFLOP/s on a square matmul."""
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def cuda_timed(fn) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - started


def bench_encoding(n: int) -> dict:
    label_texts, words, _ = vocabulary()
    texts = phrases(n, label_texts, words, random.Random(0))
    fast = SentenceTransformerEncoder("default", device="cuda", precision="float16", batch_size=1024)
    plain = SentenceTransformerEncoder("default", device="cuda", precision="float32").model
    fast.encode(texts[:2048])
    plain.encode(texts[:2048])
    fast_s = cuda_timed(lambda: fast.encode(texts))
    plain_s = cuda_timed(lambda: plain.encode(texts))
    return {
        "texts": n,
        "eztag_fp16_b1024_labels_per_s": n / fast_s,
        "sentence_transformers_defaults_labels_per_s": n / plain_s,
        "speedup": plain_s / fast_s,
    }


def bench_exact(n_labels: int, n_docs: int, dim: int, peak: float, chunk: int) -> dict:
    """Random unit vectors in float16 .npy parts on the host; ExactIndex copies them to the GPU as bf16."""
    rng = np.random.default_rng(0)
    parts = []
    for start in range(0, n_labels, chunk):
        part = rng.standard_normal((min(chunk, n_labels - start), dim), dtype=np.float32)
        parts.append((part / np.linalg.norm(part, axis=1, keepdims=True)).astype(np.float16))
    queries = rng.standard_normal((n_docs, dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index = ExactIndex(device="cuda", precision="bfloat16", label_chunk_size=chunk, query_batch_size=8192)
    load_s = cuda_timed(lambda: index._set(parts))
    index.search(queries[:8192], K)
    seconds = cuda_timed(lambda: index.search(queries, K))
    tflops = 2 * n_docs * n_labels * dim / seconds / 1e12
    return {
        "labels": n_labels,
        "documents": n_docs,
        "seconds": seconds,
        "docs_per_s": n_docs / seconds,
        "achieved_tflops": tflops,
        "fraction_of_gemm_peak": tflops / peak,
        "label_upload_s": load_s,
        "gpu_memory_peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--encode", type=int, default=200_000, help="phrases encoded")
    parser.add_argument("--labels", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--label-chunk", type=int, default=262_144)
    args = parser.parse_args()
    assert torch.cuda.is_available(), "gpu_scale.py needs a CUDA GPU"
    peak = gemm_peak_tflops()
    report = {
        "environment": environment("cuda"),
        "bf16_gemm_peak_tflops": peak,
        "encoding": bench_encoding(args.encode),
        "exact": [bench_exact(n, args.documents, 384, peak, args.label_chunk) for n in args.labels],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale-gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
