"""CPU scale benchmark: encoding throughput and top-100 search over 10^5..10^6 synthetic-from-real labels.

    python benchmarks/scale.py --labels 1000000 --documents 100000 --device cpu --out benchmarks/results/

What is measured, honestly:
- labels/s encoded: the real encoder (all-MiniLM-L6-v2, float32) on `--encode-sample` phrases, eztag's encoder
  vs plain `SentenceTransformer.encode` on the same texts in one run, interleaved; 10^6 labels is extrapolated.
- search: label vectors are the encoder's vectors of `--distinct` distinct phrases, each repeated with small seeded
  Gaussian perturbations and renormalised; document vectors likewise from encoded recombined debtags documents.
- exact and Flat are timed on `--exact-queries` documents (a full 10^5 x 10^6 exact pass takes hours on 2 cores);
  ANN indexes on the same queries, tuned (efSearch / nprobe doubled) until recall@100 vs exact >= 0.95.
Headline figures are ratios within this run; absolute times depend on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eztag.embeddings import EmbeddingStore
from eztag.encoders.sentence_transformers import SentenceTransformerEncoder
from eztag.indexes.exact import ExactIndex
from eztag.indexes.faiss import FaissIndex, estimate_bytes

DEBTAGS = Path(__file__).resolve().parents[1] / "data" / "debtags"
K = 100
TARGET = 0.95


def vocabulary() -> tuple[list[str], list[str], list[str]]:
    """(label texts, label words, document texts) of data/debtags."""
    labels = [json.loads(line)["text"] for line in (DEBTAGS / "labels.jsonl").open(encoding="utf-8")]
    documents = [json.loads(line)["text"] for line in (DEBTAGS / "sample.jsonl").open(encoding="utf-8")]
    words = sorted({word for text in labels + documents for word in text.split() if word.isalpha()})
    return labels, words, documents


def phrases(n: int, labels: list[str], words: list[str], rng: random.Random) -> list[str]:
    """Label-like phrases: a debtags label text plus one to three vocabulary words."""
    return [f"{rng.choice(labels)} {' '.join(rng.sample(words, rng.randint(1, 3)))}" for _ in range(n)]


def recombined(n: int, documents: list[str], rng: random.Random) -> list[str]:
    """Documents made of sentences from two debtags documents."""
    return [" ".join([rng.choice(documents).split(".")[0], rng.choice(documents)]) for _ in range(n)]


def perturbed(base: np.ndarray, n: int, sigma: float, seed: int) -> np.ndarray:
    """n rows: the sum of two seeded random base rows plus N(0, sigma^2) noise per dimension, renormalised."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, 262_144):
        size = min(262_144, n - start)
        pairs = rng.integers(0, len(base), size=(size, 2))
        rows = (
            base[pairs[:, 0]] + base[pairs[:, 1]] + rng.standard_normal((size, base.shape[1]), dtype=np.float32) * sigma
        )
        out[start : start + size] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth, strict=True)]))


def bench_encoding(encoder: SentenceTransformerEncoder, texts: list[str], repeats: int) -> dict:
    """Interleaved runs of eztag's encode and SentenceTransformer.encode (batch 64, normalised) on the same texts."""
    ours, plain = [], []
    for _ in range(repeats):
        plain.append(timed(lambda: encoder.model.encode(texts, batch_size=64, normalize_embeddings=True))[1])
        ours.append(timed(lambda: encoder.encode(texts))[1])
    return {
        "texts": len(texts),
        "eztag_texts_per_s": len(texts) / float(np.median(ours)),
        "sentence_transformers_texts_per_s": len(texts) / float(np.median(plain)),
        "speedup_median": float(np.median(plain) / np.median(ours)),
        "seconds_eztag": ours,
        "seconds_sentence_transformers": plain,
    }


def bench_search(labels: np.ndarray, queries: np.ndarray, workdir: Path, hnsw: bool) -> dict:
    """Build + search exact, Flat, HNSW32 and IVF over `labels`; ratios are relative to Flat."""
    n, dim = labels.shape
    store = EmbeddingStore(workdir / f"labels-{n}")
    store.write(range(n), lambda rows: labels[rows.start : rows.stop], chunk_size=262_144, description=f"store {n}")
    results: dict[str, dict] = {}
    exact = ExactIndex(device="cpu")
    _, seconds = timed(lambda: exact.build(store))
    (_, truth), search_s = timed(lambda: exact.search(queries, K))
    results["exact (torch, mmap chunks)"] = {"build_s": seconds, "docs_per_s": len(queries) / search_s}
    results["exact (torch, mmap chunks)"]["recall@100"] = 1.0
    nlist = int(4 * np.sqrt(n))
    specs = [("Flat", "Flat", None)] + ([("HNSW32", "HNSW32", "ef_search")] if hnsw else [])
    specs.append((f"IVF{nlist},Flat", f"IVF{nlist},Flat", "nprobe"))
    for name, factory, knob in specs:
        rss_before = peak_rss_mib()
        index = FaissIndex(factory=factory, device="cpu", train_size=min(n, 40 * nlist))
        _, build_s = timed(lambda index=index: index.build(store))
        row = {
            "build_s": build_s,
            "index_mib": len(faiss.serialize_index(index.index)) / 2**20,
            "estimate_mib": estimate_bytes(factory, n, dim) / 2**20,
            "peak_rss_mib_after_build": peak_rss_mib(),
            "peak_rss_growth_mib": peak_rss_mib() - rss_before,
        }
        value = 16
        while True:
            if knob:
                setattr(index, knob, value)
                index._configure()
            (_, found), search_s = timed(lambda index=index: index.search(queries, K))
            row.update({"docs_per_s": len(queries) / search_s, "recall@100": recall(found, truth)})
            if knob:
                row[knob] = value
            if not knob or row["recall@100"] >= TARGET or value >= (nlist if knob == "nprobe" else 4096):
                break
            value *= 2
        results[name] = row
        del index
    flat = results["Flat"]["docs_per_s"]
    for row in results.values():
        row["docs_per_s_vs_flat"] = row["docs_per_s"] / flat
    return {"labels": n, "queries": len(queries), "methods": results}


def environment(device: str) -> dict:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in info if "model name" in line), platform.processor())
    return {
        "device": device if device != "cuda" else torch.cuda.get_device_name(0),
        "cpu": cpu,
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
    }


def markdown(report: dict) -> str:
    env, enc = report["environment"], report["encoding"]
    lines = [
        "# eztag scale benchmark (CPU)",
        "",
        f"Device: {env['device']} ({env['cpu']}, {env['cpu_threads']} threads); torch {env['torch']}, "
        f"faiss {env['faiss']}, numpy {env['numpy']}.",
        "",
        *[f"- {note}" for note in report["notes"]],
        "",
        "## Encoding (labels, all-MiniLM-L6-v2 fp32)",
        "",
        f"eztag encode / SentenceTransformer.encode speed: **{enc['labels']['speedup_median']:.2f}x** "
        f"(median of {len(enc['labels']['seconds_eztag'])} interleaved runs, {enc['labels']['texts']} phrases); "
        f"documents: **{enc['documents']['speedup_median']:.2f}x** ({enc['documents']['texts']} documents). "
        f"Extrapolated time to encode 10^6 labels here: {1e6 / enc['labels']['eztag_texts_per_s'] / 3600:.1f} h.",
        "",
        "## Top-100 search",
        "",
        "| labels | method | docs/s ÷ Flat | recall@100 vs exact | knob | build s | index MiB (estimate) |",
        "|---:|---|---:|---:|---|---:|---:|",
    ]
    for run in report["search"]:
        for name, row in run["methods"].items():
            knob = next((f"{key}={row[key]}" for key in ("ef_search", "nprobe") if key in row), "")
            size = f"{row['index_mib']:.0f} ({row['estimate_mib']:.0f})" if "index_mib" in row else "mmap .npy"
            lines.append(
                f"| {run['labels']:,} | {name} | {row['docs_per_s_vs_flat']:.2f} | {row['recall@100']:.3f} | {knob} "
                f"| {row['build_s']:.1f} | {size} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=1_000_000, help="largest label count (10^5 is always run)")
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--device", default="cpu", choices=["cpu"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--encode-sample", type=int, default=400, help="phrases actually encoded for labels/s")
    parser.add_argument("--distinct", type=int, default=400, help="distinct encoded phrases behind the label vectors")
    parser.add_argument("--exact-queries", type=int, default=1000, help="documents searched per method")
    parser.add_argument("--hnsw-max-labels", type=int, default=100_000, help="skip HNSW32 builds above this")
    parser.add_argument("--sigma", type=float, default=0.02, help="per-dimension perturbation of label vectors")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = random.Random(0)
    label_texts, words, document_texts = vocabulary()
    encoder = SentenceTransformerEncoder("default", device="cpu", precision="float32")

    label_sample = phrases(args.encode_sample, label_texts, words, rng)
    doc_sample = recombined(max(50, args.encode_sample // 10), document_texts, rng)
    encoding = {
        "labels": bench_encoding(encoder, label_sample, args.repeats),
        "documents": bench_encoding(encoder, doc_sample, args.repeats),
    }
    base_labels = encoder.encode(label_sample[: args.distinct])
    base_docs = encoder.encode(doc_sample)
    queries = perturbed(base_docs, min(args.exact_queries, args.documents), args.sigma, seed=2)

    sizes = [n for n in (100_000, 1_000_000, 10_000_000) if n <= max(args.labels, 100_000)]
    workdir = args.out / "work"
    search = []
    for n in sizes:
        labels = perturbed(base_labels, n, args.sigma, seed=1)
        search.append(bench_search(labels, queries, workdir, hnsw=n <= args.hnsw_max_labels))
        del labels
        print(json.dumps(search[-1], indent=1), flush=True)
    for path in sorted(workdir.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    workdir.rmdir()

    notes = [
        "Label texts are phrases generated from the debtags vocabulary (a debtags label text plus 1-3 words of the "
        "debtags label and document texts), not real label text.",
        f"Documents are debtags sample documents recombined (first sentence of one + another); {len(doc_sample)} were "
        f"encoded, and the {len(queries)} query vectors are sums of two random such vectors plus seeded "
        f"N(0, {args.sigma}^2) per-dimension noise, renormalised. --documents {args.documents} was requested; "
        "a full 10^5-document pass per method is not run on this CPU: docs/s is measured on the query sample.",
        f"Label vectors for search: {args.distinct} encoded distinct phrases, each of the N rows the sum of two "
        f"seeded random ones plus N(0, {args.sigma}^2) per-dimension noise, renormalised "
        "(encoding 10^6 labels on this CPU would take hours).",
        f"labels/s is measured on {len(label_sample)} real encodes and extrapolated to 10^6.",
        f"HNSW32 is built only up to {args.hnsw_max_labels:,} labels (build time on this shared 2-core machine).",
        "10^7 labels: skipped on this 24 GiB machine (10^7 x 384 float32 = 15 GiB of vectors before any index, "
        "plus the perturbation copy).",
        "Ratios are within this run; the machine was shared with other jobs, so absolute seconds are noisy.",
    ]
    report = {"environment": environment(args.device), "notes": notes, "encoding": encoding, "search": search}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale-cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "scale-cpu.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
