"""Exact top-100 search on a GPU at 10^6 and 10^7 labels x 10^5 documents (384 dims, fp16, labels resident), with its
anchors in the same run: the naive program (`torch.topk(q @ L.T)` per query batch over the same resident matrix) and
a square fp16 matrix product's peak; each selection of the exact index (`torch`: two-stage top-k over each score
matrix, `triton`: the fused kernel of eztag/indexes/fused_topk.py, no score matrix). Achieved TFLOP/s = 2 x documents
x labels x dims / seconds; recall@100 against the naive program. Vectors are random unit vectors made on the GPU
(search cost does not depend on their values). Needs only torch and numpy beside eztag:

    python benchmarks/gpu_scale.py --out benchmarks/results/exact-h200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from eztag.indexes.exact import ExactIndex

K, DIM = 100, 384


def timed(fn) -> tuple[float, object]:
    torch.cuda.synchronize()
    started = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - started, out


def gemm_peak_tflops(size: int = 8192, repeats: int = 20) -> float:
    left = torch.randn(size, size, device="cuda", dtype=torch.float16)
    right = torch.randn(size, size, device="cuda", dtype=torch.float16)
    timed(lambda: [left @ right for _ in range(3)])
    seconds, _ = timed(lambda: [left @ right for _ in range(repeats)])
    return 2 * size**3 * repeats / seconds / 1e12


def unit_rows(n: int, generator: torch.Generator, chunk: int = 1 << 20) -> list[np.ndarray]:
    parts = []
    for start in range(0, n, chunk):
        block = torch.randn(min(chunk, n - start), DIM, device="cuda", generator=generator)
        parts.append(torch.nn.functional.normalize(block, dim=1).half().cpu().numpy())
    return parts


def bench(n_labels: int, queries: np.ndarray, peak: float) -> list[dict]:
    """One row per selection (torch's two stages, the Triton kernel) over the same resident labels, each beside the
    naive program's time and its recall@100 against it."""
    generator = torch.Generator(device="cuda").manual_seed(n_labels)
    parts = unit_rows(n_labels, generator)
    index = ExactIndex(device="cuda")  # defaults: fp16 on a GPU, 262,144 labels x 4,096 queries per product
    upload_s, _ = timed(lambda: index.set_labels(parts))
    flops = 2 * len(queries) * n_labels * DIM
    labels = index.resident
    assert labels is not None
    batch = max(1, min(4096, int(4e9 // (2 * n_labels))))  # naive score matrices of at most ~8 GB

    def naive() -> torch.Tensor:
        out = []
        for start in range(0, len(queries), batch):
            q = torch.from_numpy(queries[start : start + batch]).to("cuda", labels.dtype)
            out.append(torch.topk(q @ labels.T, K, dim=1).indices.cpu())
        return torch.cat(out)

    naive_s, naive_rows = timed(naive)
    checked = min(2000, len(queries))
    rows_out = []
    for selection in ("torch", "triton"):
        index.selection = selection
        try:
            index.search(queries[:4096], K)  # warm-up (and the kernel's compilation)
        except Exception as error:  # a kernel's first run on this GPU: keep the other rows
            rows_out.append({"labels": n_labels, "selection": selection, "error": repr(error)[:300]})
            print(json.dumps(rows_out[-1]), flush=True)
            continue
        torch.cuda.reset_peak_memory_stats()
        seconds, (_, rows) = timed(lambda: index.search(queries, K))
        hits = sum(len(set(rows[i].tolist()) & set(naive_rows[i].tolist())) for i in range(checked))
        rows_out.append(
            {
                "labels": n_labels,
                "documents": len(queries),
                "selection": selection,
                "seconds": round(seconds, 3),
                "tflops": round(flops / seconds / 1e12, 1),
                "fraction_of_peak": round(flops / seconds / 1e12 / peak, 3),
                "naive_seconds": round(naive_s, 3),
                "naive_tflops": round(flops / naive_s / 1e12, 1),
                "speedup_vs_naive": round(naive_s / seconds, 2),
                "recall_at_100_vs_naive_first_2000": hits / (checked * K),
                "label_upload_s": round(upload_s, 2),
                "gpu_memory_peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            }
        )
        print(json.dumps(rows_out[-1]), flush=True)
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--out", type=Path, required=True, help="OUT.json and OUT.md are written")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "gpu_scale.py needs a CUDA GPU"
    peak = gemm_peak_tflops()
    generator = torch.Generator(device="cuda").manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(args.documents, DIM, device="cuda", generator=generator))
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "k": K, "dim": DIM}
    report["fp16_gemm_peak_tflops"] = round(peak, 1)
    report["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    report["rows"] = []
    for n in args.labels:
        report["rows"] += bench(n, queries.cpu().numpy(), peak)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        f"# Exact top-{K} on {report['device']} (torch {report['torch']}, fp16 GEMM peak "
        f"{report['fp16_gemm_peak_tflops']} TFLOP/s measured in the run)",
        "",
        "| labels | documents | selection | seconds | TFLOP/s | of peak | naive s | naive TFLOP/s | speed-up "
        "| recall@100 vs naive | GPU peak GiB |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['labels']:,} | {r['documents']:,} | {r['selection']} | {r['seconds']} | {r['tflops']} "
        f"| {r['fraction_of_peak']:.1%} "
        f"| {r['naive_seconds']} | {r['naive_tflops']} | {r['speedup_vs_naive']} "
        f"| {r['recall_at_100_vs_naive_first_2000']:.4f} | {r['gpu_memory_peak_gib']} |"
        if "error" not in r
        else f"| {r['labels']:,} | | {r['selection']} | failed: {r['error']} | | | | | | | |"
        for r in report["rows"]
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
