"""Label retrieval at GPU speed, each part with its anchors in the same run.

`--part exact` (the default; needs a CUDA GPU): exact top-100 search at 10^6 and 10^7 labels x 10^5 documents (384
dims, fp16, labels resident), beside the naive program (`torch.topk(q @ L.T)` per query batch over the same resident
matrix) and a square fp16 matrix product's peak; each selection of the exact index (`torch`: two-stage top-k over each
score matrix, `triton`: the fused kernel of eztag/indexes/fused_topk.py, no score matrix). Achieved TFLOP/s = 2 x
documents x labels x dims / seconds; recall@100 against the naive program. Vectors are random unit vectors made on
the GPU (search cost does not depend on their values).

`--part encode` (a GPU, or the CPU with fewer texts): eztag's encoder on label phrases (2-12 words) and documents
(the debtags sample, up to 256 tokens) against `SentenceTransformer.encode` with its defaults (float32, batch 32) and
with the right two arguments (on a GPU float16 weights and batch 1,024; on the CPU batch 64); where eztag's
time goes (tokenising alone, the model alone on tokenised batches already on the device, padding) and a
torch.profiler table of its operators (OUT-profile.txt); with --compile also eztag's encoder with the model under
`torch.compile(dynamic=True)` (its compile seconds apart; on 2 CPU cores 1.08x on phrases, 1.16x on documents:
results/encode-cpu-runtimes.md). The model is MiniLM-L6's shape with random weights (benchmarks/models/,
random_models.py) unless --encoder names one. Needs only torch, transformers and
sentence-transformers beside eztag:

    python benchmarks/gpu_scale.py --out benchmarks/results/exact-h200
    python benchmarks/gpu_scale.py --part encode --out benchmarks/results/encode-h200
    python benchmarks/gpu_scale.py --part encode --phrases 4000 --documents 600 --encoder default --repeats 3 \
        --out benchmarks/results/encode-cpu
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from random_models import materialise
from timing import matmul_peak_tflops, timed

from eztag.devices import SPEED_FLAGS, cpu_flags
from eztag.indexes.exact import ExactIndex

K, DIM = 100, 384
DATA = Path(__file__).resolve().parents[1] / "data" / "debtags"


def unit_rows(n: int, generator: torch.Generator, chunk: int = 1 << 20) -> list[np.ndarray]:
    parts = []
    for start in range(0, n, chunk):
        block = torch.randn(min(chunk, n - start), DIM, device="cuda", generator=generator)
        parts.append(torch.nn.functional.normalize(block, dim=1).half().cpu().numpy())
    return parts


def bench(n_labels: int, queries: np.ndarray, peak: float) -> list[dict]:
    """One row per selection (torch's two stages, the Triton kernel) over the same resident labels, and one for the
    torch selection over labels streamed from host memory (`label_memory = "host"`: each chunk crosses once per
    search), each beside the naive program's time and its recall@100 against it."""
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
    streamed = ExactIndex(device="cuda", label_memory="host")
    streamed.set_labels(parts)
    rows_out = []
    for selection, searched in (("torch", index), ("triton", index), ("torch", streamed)):
        searched.selection = selection
        where = "GPU" if searched.resident is not None else "host, streamed"
        try:
            searched.search(queries[:4096], K)  # warm-up (and the kernel's compilation)
        except Exception as error:  # a kernel's first run on this GPU: keep the other rows
            failed = {"labels": n_labels, "selection": selection, "labels_in": where, "error": repr(error)[:300]}
            rows_out.append(failed)
            print(json.dumps(rows_out[-1]), flush=True)
            continue
        torch.cuda.reset_peak_memory_stats()
        seconds, (_, rows) = timed(functools.partial(searched.search, queries, K))
        hits = sum(len(set(rows[i].tolist()) & set(naive_rows[i].tolist())) for i in range(checked))
        rows_out.append(
            {
                "labels": n_labels,
                "documents": len(queries),
                "selection": selection,
                "labels_in": where,
                "label_gb_per_s": round(n_labels * DIM * 2 / seconds / 1e9, 1) if searched is streamed else None,
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


def exact_part(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """The exact top-k report and its markdown lines."""
    if not torch.cuda.is_available():
        raise SystemExit("gpu_scale.py --part exact needs a CUDA GPU (on the CPU: benchmarks/million_labels.py)")
    peak = matmul_peak_tflops("cuda", torch.float16, 8192)
    generator = torch.Generator(device="cuda").manual_seed(0)
    queries = torch.nn.functional.normalize(
        torch.randn(args.documents or 100_000, DIM, device="cuda", generator=generator)
    )
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "k": K, "dim": DIM}
    report["fp16_gemm_peak_tflops"] = round(peak, 1)
    report["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    report["rows"] = []
    for n in args.labels:
        report["rows"] += bench(n, queries.cpu().numpy(), peak)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    lines = [
        f"# Exact top-{K} on {report['device']} (torch {report['torch']}, fp16 GEMM peak "
        f"{report['fp16_gemm_peak_tflops']} TFLOP/s measured in the run)",
        "",
        "| labels | documents | selection | labels in | seconds | TFLOP/s | of peak | naive s | naive TFLOP/s "
        "| speed-up | recall@100 vs naive | GPU peak GiB |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['labels']:,} | {r['documents']:,} | {r['selection']} | {r['labels_in']} | {r['seconds']} "
        f"| {r['tflops']} "
        f"| {r['fraction_of_peak']:.1%} "
        f"| {r['naive_seconds']} | {r['naive_tflops']} | {r['speedup_vs_naive']} "
        f"| {r['recall_at_100_vs_naive_first_2000']:.4f} | {r['gpu_memory_peak_gib']} |"
        if "error" not in r
        else f"| {r['labels']:,} | | {r['selection']} | {r['labels_in']} | failed: {r['error']} | | | | | | | |"
        for r in report["rows"]
    ]
    lines += [
        "",
        "Streamed rows: the labels' fp16 bytes over the search's seconds, "
        + ", ".join(f"{r['label_gb_per_s']} GB/s at {r['labels']:,}" for r in report["rows"] if r.get("label_gb_per_s"))
        + ".",
    ]
    return report, lines


def texts_for_encoding(phrases: int, documents: int) -> tuple[list[str], list[str]]:
    """Label phrases of 2-12 words from the debtags vocabulary (seeded), and the debtags sample's documents
    repeated, each made unique by its number."""
    rows = [json.loads(line) for line in (DATA / "sample.jsonl").open()]
    labels = [json.loads(line) for line in (DATA / "labels.jsonl").open()]
    vocabulary = [f"{label['text']} {label.get('description', '')}" for label in labels] + [r["text"] for r in rows]
    words = sorted({word for text in vocabulary for word in text.split() if word.isalpha()})
    rng = random.Random(0)
    phrase_texts = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 12))) for _ in range(phrases)]
    document_texts = [f"{rows[i % len(rows)]['title']}: {rows[i % len(rows)]['text']} {i}" for i in range(documents)]
    return phrase_texts, document_texts


def where_time_goes(encoder: Any, texts: list[str]) -> dict[str, float]:
    """eztag's encode taken apart: tokenising all texts alone (one call, as encode does), cutting them into batches
    and copying those to the device, the model alone on them (weights in the run's dtype), and the share of padded
    tokens."""
    from eztag.encoders.sentence_transformers import token_batches

    tokenise_s, tokenised = timed(lambda: encoder.tokenise(texts))
    device = encoder.device
    copy_s, on_device = timed(
        lambda: [
            {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            for _, batch in token_batches(tokenised, encoder.batch_size, encoder.batch_tokens)
        ]
    )
    real = sum(int(batch["attention_mask"].sum()) for batch in on_device)
    padded = sum(batch["attention_mask"].numel() for batch in on_device)

    def model_only() -> None:
        with torch.inference_mode():
            for batch in on_device:
                encoder.model(batch)["sentence_embedding"]

    model_s, _ = timed(model_only)
    return {
        "tokenise_s": round(tokenise_s, 3),
        "batch_and_copy_s": round(copy_s, 3),
        "model_s": round(model_s, 3),
        "tokens_per_text": round(real / len(texts), 1),
        "padded_share": round(1 - real / padded, 3),
    }


def min_cosine(vectors: np.ndarray, others: np.ndarray) -> float:
    """The least cosine between matching rows of two sets of unit vectors (5 decimals)."""
    return round(float(np.min(np.sum(vectors * others, axis=1))), 5)


def encode_part(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """The encoder report and its markdown lines; the profile goes to OUT-profile.txt."""
    from sentence_transformers import SentenceTransformer, __version__

    from eztag.encoders.sentence_transformers import SentenceTransformerEncoder

    cuda = torch.cuda.is_available()
    model = args.encoder or str(materialise("all-minilm-l6-v2", args.models_dir, causal=False))
    encoder = SentenceTransformerEncoder(model)  # the defaults for this device
    path, device = str(encoder.fingerprint["model"]), str(encoder.device)
    # encode() with the two arguments that matter: eztag's dtype, and its batch on a GPU; on the CPU, where eztag cuts
    # batches by tokens, batch 64 (eztag's batch there until 2026-12-07, faster than ST's 32 on label phrases)
    anchor_batch = encoder.batch_size if cuda else 64
    tuned = f"{str(encoder.dtype).removeprefix('torch.')}, batch {anchor_batch}"
    anchors = {  # (model, batch size): what a user writes, and encode() with the two arguments that matter
        "float32, batch 32 (defaults)": (SentenceTransformer(path, device=device), 32),
        tuned: (
            SentenceTransformer(path, device=device, model_kwargs={"torch_dtype": encoder.dtype}),
            anchor_batch,
        ),
    }
    compiled = SentenceTransformerEncoder(model) if args.compile else None  # the same, its model compiled
    if compiled is not None:
        compiled.model.forward = torch.compile(compiled.model.forward, dynamic=True)
    phrases, documents = texts_for_encoding(args.phrases, args.documents or 20_000)
    report: dict = {
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": sorted(SPEED_FLAGS & cpu_flags()),
        "torch": torch.__version__,
        "sentence_transformers": __version__,
        "model": args.encoder or "MiniLM-L6 shape, random weights",
        "eztag": {
            "dtype": str(encoder.dtype).removeprefix("torch."),
            "batch_size": encoder.batch_size,
            "batch_tokens": encoder.batch_tokens,
        },
        "rows": [],
    }
    if compiled is not None:  # the first shapes of each kind compile; later ones reuse the dynamic graph
        report["compile_s"] = round(
            timed(lambda: (compiled.encode(phrases[:256]), compiled.encode(documents[:64])))[0], 1
        )
    for name, texts in (("label phrases", phrases), ("documents", documents)):
        encoder.encode(texts[:256])  # warm-up
        for anchor, batch_size in anchors.values():
            anchor.encode(texts[:256], batch_size=batch_size)
        runs: dict[str, list[float]] = {"eztag": [], "eztag compiled": [], **{name: [] for name in anchors}}
        cosines: dict[str, float] = {}
        for _ in range(args.repeats):  # interleaved; the best of each
            seconds, vectors = timed(lambda texts=texts: encoder.encode(texts))
            runs["eztag"].append(seconds)
            if compiled is not None:
                compiled_s, compiled_vectors = timed(lambda texts=texts: compiled.encode(texts))
                runs["eztag compiled"].append(compiled_s)
                cosines["eztag compiled"] = min_cosine(vectors, compiled_vectors)
            for anchor_name, (anchor, batch_size) in anchors.items():
                anchor_s, anchor_vectors = timed(
                    lambda texts=texts, anchor=anchor, batch_size=batch_size: anchor.encode(
                        texts, batch_size=batch_size, normalize_embeddings=True
                    )
                )
                runs[anchor_name].append(anchor_s)
                cosines[anchor_name] = min_cosine(vectors, anchor_vectors)
        seconds = min(runs["eztag"])
        row: dict[str, Any] = {"texts": name, "count": len(texts), "eztag_per_s": round(len(texts) / seconds, 1)}
        row["anchors"] = {
            anchor_name: {
                "per_s": round(len(texts) / min(runs[anchor_name]), 1),
                "eztag_speed_up": round(min(runs[anchor_name]) / seconds, 2),
                "min_cosine_to_eztag": cosines[anchor_name],
            }
            for anchor_name in anchors
        }
        if compiled is not None:
            row["compiled"] = {
                "per_s": round(len(texts) / min(runs["eztag compiled"]), 1),
                "speed_up_over_eztag": round(seconds / min(runs["eztag compiled"]), 2),
                "min_cosine_to_eztag": cosines["eztag compiled"],
            }
        row["seconds_per_run"] = {key: [round(value, 3) for value in values] for key, values in runs.items() if values}
        row["eztag_seconds"] = round(seconds, 3)
        row.update(where_time_goes(encoder, texts))
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
    profile_encoder(encoder, phrases[: 8 * anchor_batch], args.out)
    defaults = f"{report['eztag']['dtype']}, at most {encoder.batch_size:,} texts" + (
        f" and {encoder.batch_tokens:,} tokens a batch" if encoder.batch_tokens else " a batch"
    )
    lines = [
        f"# Encoding on {report['device']} ({report['model']}; torch {report['torch']}, sentence-transformers "
        f"{report['sentence_transformers']}; CPU flags {' '.join(report['cpu_flags']) or 'none read'})",
        "",
        f"eztag's encoder at its defaults here ({defaults}) against `SentenceTransformer.encode` in the same run; "
        "then eztag's time taken apart: tokenising all texts alone, cutting the batches and copying them to the "
        "device, the model alone.",
        "",
        "| texts | count | eztag /s | "
        + " | ".join(f"encode {name} /s (eztag x)" for name in anchors)
        + " | eztag s | tokenise s | batch+copy s | model s | tokens/text | padded |",
        "|---|---:|---:|" + "---:|" * len(anchors) + "---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['texts']} | {r['count']:,} | {r['eztag_per_s']:,} | "
        + " | ".join(f"{a['per_s']:,} ({a['eztag_speed_up']}x)" for a in r["anchors"].values())
        + f" | {r['eztag_seconds']} | {r['tokenise_s']} | {r['batch_and_copy_s']} | {r['model_s']} "
        f"| {r['tokens_per_text']} | {r['padded_share']:.1%} |"
        for r in report["rows"]
    ]
    if compiled is not None:
        lines += [
            "",
            f"With the model compiled (`torch.compile(dynamic=True)`, {report['compile_s']} s compiling first):",
            "",
        ]
        lines += [
            f"- {r['texts']}: {r['compiled']['per_s']:,}/s, {r['compiled']['speed_up_over_eztag']}x eztag eager, "
            f"min cosine {r['compiled']['min_cosine_to_eztag']}"
            for r in report["rows"]
        ]
    return report, lines


def profile_encoder(encoder: Any, texts: list[str], out: Path) -> None:
    """torch.profiler over eztag's encode of `texts`: its operators by device time (CPU time on the CPU)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as trace:
        seconds, _ = timed(lambda: encoder.encode(texts))
    sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    table = trace.key_averages().table(sort_by=sort, row_limit=25)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(out.name + "-profile.txt").write_text(
        f"{len(texts)} label phrases in {seconds:.3f} s under the profiler\n{table}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["exact", "encode"], default="exact")
    parser.add_argument("--labels", type=int, nargs="+", default=[1_000_000, 10_000_000], help="exact")
    parser.add_argument("--documents", type=int, help="exact: query vectors (100,000); encode: documents (20,000)")
    parser.add_argument("--phrases", type=int, default=100_000, help="encode: label phrases")
    parser.add_argument("--repeats", type=int, default=1, help="encode: timed runs of each, interleaved (best)")
    parser.add_argument("--encoder", help="encode: an encoder as eztag takes it (default: MiniLM, random weights)")
    parser.add_argument("--compile", action="store_true", help="encode: also eztag's encoder under torch.compile")
    parser.add_argument("--models-dir", type=Path, default=Path("/tmp/eztag-random-models"))
    parser.add_argument("--out", type=Path, required=True, help="OUT.json and OUT.md are written")
    args = parser.parse_args()
    report, lines = exact_part(args) if args.part == "exact" else encode_part(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
