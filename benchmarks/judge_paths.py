"""The transformers judge's scoring paths on the same pairs, in one run: pairs/s, prompt tokens/s, achieved TFLOP/s
and the fraction of a matrix-product peak measured in the same run, and each path's largest log-odds difference
from the naive path (every prompt in full).

Two workloads from the debtags sample: the judge stage's (each document with 8 candidates) and distil's re-judging
(each document with 1 or 2 new candidates). Runs offline on a GPU host with torch and transformers (no polars):

    python benchmarks/judge_paths.py --model skeleton:qwen2.5-coder-1.5b --out benchmarks/results/judge-paths-h200
    python benchmarks/judge_paths.py --model smollm2-135m --documents 16 --out benchmarks/results/judge-paths-cpu

`skeleton:NAME[:LAYERS]` is a weightless folder of benchmarks/models/ given random weights (random_models.py);
anything else is a judge model as eztag takes it (a named judge, a folder, a hub id in the local cache).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import random
import time
from pathlib import Path
from typing import Any

import torch
from random_models import materialise
from timing import matmul_peak_tflops, timed

from eztag.devices import SPEED_FLAGS, cpu_flags
from eztag.judges.transformers import TransformersJudge
from eztag.prompts import Pair, PromptTemplate

DATA = Path(__file__).resolve().parents[1] / "data" / "debtags"
# (scoring, batch_size, token_budget, cudnn_attention) per device; the naive path first: it is the reference. On a
# GPU the batched path also runs without cuDNN's attention kernels (a plan built per new shape: the H200 profile)
SETTINGS = {
    "cuda": [("naive", 256, 0, True), ("per-document", 32, 0, True)]
    + [("batched", 0, budget, cudnn) for budget in (65536, 131072, 262144) for cudnn in (True, False)],
    "cpu": [("naive", 32, 0, True), ("per-document", 32, 0, True)]
    + [("batched", 0, budget, True) for budget in (1024, 4096, 16384)],
}


def workloads(judge: TransformersJudge, documents: int, seed: int = 0) -> dict[str, list[Pair]]:
    """{"stage": 8 random labels per document, "rejudge": 1 or 2 per document}, documents cut to 128 tokens."""
    labels = [json.loads(line) for line in (DATA / "labels.jsonl").open()]
    rows = [json.loads(line) for line in (DATA / "sample.jsonl").open()][:documents]
    texts = judge.truncate([f"{row['title']}: {row['text']}" for row in rows], 128)
    rng = random.Random(seed)
    pick = [rng.sample(labels, 8) for _ in texts]
    return {
        "stage": [
            Pair(text, label["text"], label["description"])
            for text, chosen in zip(texts, pick, strict=True)
            for label in chosen
        ],
        "rejudge": [
            Pair(text, label["text"], label["description"])
            for i, (text, chosen) in enumerate(zip(texts, pick, strict=True))
            for label in chosen[: 1 + i % 2]
        ],
    }


def prompt_tokens(ids: list[list[int]], pairs: list[Pair]) -> tuple[int, int]:
    """(all prompt tokens, tokens left when each document's shared prefix counts once)."""
    groups: dict[str, list[list[int]]] = {}
    for pair, row in zip(pairs, ids, strict=True):
        groups.setdefault(pair.document, []).append(row)
    unique = 0
    for rows in groups.values():
        shared = 0
        while shared < min(map(len, rows)) - 1 and all(row[shared] == rows[0][shared] for row in rows):
            shared += 1
        unique += shared + sum(len(row) - shared for row in rows)
    return sum(map(len, ids)), unique


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="skeleton:qwen2.5-coder-1.5b")
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--models-dir", type=Path, default=Path("/tmp/eztag-random-models"))
    parser.add_argument("--out", type=Path, required=True, help="OUT.json and OUT.md are written")
    parser.add_argument("--profile", action="store_true", help="only profile the default path: OUT-profile.txt")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = args.model
    if model.startswith("skeleton:"):
        name, _, layers = model.removeprefix("skeleton:").partition(":")
        model = str(materialise(name, args.models_dir, causal=True, layers=int(layers) if layers else None))
    template = PromptTemplate.named("yes-no", "software package")
    reference = TransformersJudge(model, template, device=device, precision=args.precision, scoring="naive")
    reference.load()
    params = sum(p.numel() for p in reference.model.parameters())
    size, dtype = (8192, torch.bfloat16) if device == "cuda" else (1024, torch.float32)  # the judge's, at scale
    peak_name, peak = f"{str(dtype).removeprefix('torch.')} {size}x{size}", matmul_peak_tflops(device, dtype, size)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": sorted(SPEED_FLAGS & cpu_flags()),
        "torch": torch.__version__,
        "model": args.model,
        "dtype": str(reference.dtype).removeprefix("torch."),
        "parameters": params,
        "matmul_peak": {"what": peak_name, "tflops": round(peak, 1)},
        "rows": [],
    }
    print(json.dumps({key: value for key, value in report.items() if key != "rows"}), flush=True)
    if args.profile:
        profile(model, template, device, args)
        return
    for workload, pairs in workloads(reference, args.documents).items():
        started = time.perf_counter()
        ids = reference.prompt_ids(pairs)
        tokenise_seconds = time.perf_counter() - started  # part of every path's time (overlapped when batched)
        tokens, unique = prompt_tokens(ids, pairs)
        naive_log_odds: list[float] = []
        for scoring, batch_size, budget, cudnn in SETTINGS[device]:
            reference.scoring, reference.batch_size = scoring, batch_size or 32
            reference.token_budget, reference.cudnn_attention = budget or reference.token_budget, cudnn
            reference.score(pairs[:16])  # warm-up
            seconds, judgments = timed(functools.partial(reference.score, pairs))
            log_odds = [j.log_odds if j.log_odds is not None else float("nan") for j in judgments]
            naive_log_odds = naive_log_odds or log_odds
            row = {
                "workload": workload,
                "scoring": scoring,
                "batch_size": batch_size or None,
                "token_budget": budget or None,
                "cudnn_attention": cudnn,
                "pairs": len(pairs),
                "documents": len({pair.document for pair in pairs}),
                "prompt_tokens_mean": round(tokens / len(pairs), 1),
                "seconds": round(seconds, 3),
                "tokenise_seconds": round(tokenise_seconds, 3),
                "pairs_per_s": round(len(pairs) / seconds, 1),
                "prompt_tokens_per_s": round(tokens / seconds),
                # work as if every prompt ran in full, and the work left when each document's prefix runs once
                "tflops_all_tokens": round(2 * params * tokens / seconds / 1e12, 2),
                "tflops_prefix_once": round(2 * params * unique / seconds / 1e12, 2),
                "roofline_pairs_per_s_all_tokens": round(peak * 1e12 / (2 * params * tokens / len(pairs)), 1),
                "roofline_pairs_per_s_prefix_once": round(peak * 1e12 / (2 * params * unique / len(pairs)), 1),
                "failures": sum(j.failure is not None for j in judgments),
                "max_log_odds_difference_vs_naive": max(
                    abs(a - b) for a, b in zip(log_odds, naive_log_odds, strict=True)
                ),
            }
            if device == "cuda":
                row["gpu_memory_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                torch.cuda.reset_peak_memory_stats()
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))


def profile(model: str, template: PromptTemplate, device: str, args: argparse.Namespace) -> None:
    """torch.profiler over the default scoring path on the stage workload: the operators by device and CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    judge = TransformersJudge(model, template, device=device, precision=args.precision)
    pairs = workloads(judge, args.documents)["stage"]
    judge.score(pairs[:64])  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profiler(activities=activities) as trace:
        seconds, _ = timed(functools.partial(judge.score, pairs))
    sort = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    table = trace.key_averages().table(sort_by=sort, row_limit=30)
    text = f"{judge.settings} {len(pairs)} pairs in {seconds:.3f} s under the profiler\n{table}\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_name(args.out.name + "-profile.txt").write_text(text)
    print(text)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Judge scoring paths on {report['device']}",
        "",
        f"Model {report['model']} ({report['parameters'] / 1e9:.3f} B parameters, {report['dtype']}); torch "
        f"{report['torch']}; CPU flags {' '.join(report['cpu_flags']) or 'none read'}; matrix-product peak "
        f"measured in this run: {report['matmul_peak']['tflops']} TFLOP/s ({report['matmul_peak']['what']}).",
        "TFLOP/s count 2 x parameters x tokens: every prompt token (all), or each document's shared prefix once "
        "(prefix once); the roofline is the pairs/s at the measured peak for that work.",
        "",
        "| workload | scoring | batch / token budget | pairs | pairs/s | tokens/s | TFLOP/s all (prefix once) "
        "| of roofline (prefix once) | max log-odds diff vs naive | tokenising alone (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        size = f"{row['batch_size']} pairs" if row["batch_size"] else f"{row['token_budget']} tokens"
        size += "" if row.get("cudnn_attention", True) else ", no cuDNN attention"
        lines.append(
            f"| {row['workload']} | {row['scoring']} | {size} | {row['pairs']} | {row['pairs_per_s']} "
            f"| {row['prompt_tokens_per_s']} | {row['tflops_all_tokens']} ({row['tflops_prefix_once']}) "
            f"| {row['pairs_per_s'] / row['roofline_pairs_per_s_prefix_once']:.1%} "
            f"| {row['max_log_odds_difference_vs_naive']:.2g} | {row['tokenise_seconds']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
