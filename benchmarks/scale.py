"""CPU scale benchmark: encoder settings on real debtags documents, and top-100 search at 10^5 and 10^6 labels.

    python benchmarks/scale.py --labels 1000000 --out benchmarks/results/

What is measured, honestly:
- encoders: documents/s on the first `--encode-documents` documents of the debtags test split for
  SentenceTransformer.encode float32 and eztag's encoder in each `[encode]` setting (float32, bfloat16),
  interleaved runs, median; the lowest cosine of a setting's vectors with torch float32's; and nDCG@5 of
  pipelines/recall-benchmark.toml (all 5,735 test documents, exact search) run with that setting.
- search: label vectors are the encoder's vectors of `--distinct` distinct phrases, each repeated with small seeded
  Gaussian perturbations and renormalised; document vectors likewise from encoded recombined debtags documents.
- exact and Flat: median of `--repeats` searches of `--exact-queries` documents (a full 10^5 x 10^6 exact pass
  takes hours on 2 cores). HNSW (M `--hnsw-m`, efConstruction `--ef-construction`) and IVF (nlist 4 sqrt(N)) are
  built at every size and swept over efSearch / nprobe: recall@100 vs exact against documents/s, with build
  seconds, index size and peak RSS growth.
Headline figures are ratios within this run; absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import platform
import random
import resource
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from eztag.embeddings import EmbeddingStore
from eztag.encoding import EncodeConfig, load_encoder
from eztag.indexes import LabelIndex
from eztag.indexes.exact import ExactIndex
from eztag.indexes.faiss import FaissIndex, estimate_bytes
from eztag.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
DEBTAGS = ROOT / "data" / "debtags"
RECALL_BENCHMARK = ROOT / "pipelines" / "recall-benchmark.toml"
K = 100
TARGET = 0.95
EF_SEARCH = [32, 64, 128, 256, 512, 1024]
NPROBE = [8, 16, 32, 64, 128, 256]


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


SETTINGS = {"torch float32": {}, "torch bfloat16": {"precision": "bfloat16"}}  # `[encode]` settings compared


def bench_encoders(texts: list[str], settings: dict[str, dict[str, str]], repeats: int, workdir: Path) -> dict:
    """Documents/s of each setting against SentenceTransformer.encode float32 (interleaved, median), the cosine of
    its vectors with float32's, and nDCG@5 of the recall benchmark (debtags test) run with it."""
    encoders = {name: load_encoder(EncodeConfig(device="cpu", **setting)) for name, setting in settings.items()}
    plain = encoders["torch float32"].model
    seconds: dict[str, list[float]] = {"SentenceTransformer.encode float32": []} | {name: [] for name in encoders}
    for _ in range(repeats):
        seconds["SentenceTransformer.encode float32"].append(
            timed(lambda: plain.encode(texts, batch_size=64, normalize_embeddings=True))[1]
        )
        for name, encoder in encoders.items():
            seconds[name].append(timed(lambda encoder=encoder: encoder.encode(texts))[1])
    reference = encoders["torch float32"].encode(texts)
    baseline = float(np.median(seconds["SentenceTransformer.encode float32"]))
    rows = {}
    for name, times in seconds.items():
        row = {"docs_per_s": len(texts) / float(np.median(times)), "seconds": times}
        row["speedup_vs_sentence_transformers"] = baseline / float(np.median(times))
        if name in encoders:
            setting = settings[name]
            row["setting"] = setting
            row["min_cosine_vs_float32"] = float(np.sum(encoders[name].encode(texts) * reference, axis=1).min())
            overrides = ["encode.device=cpu", *(f"encode.{key}={value}" for key, value in setting.items())]
            run_dir = workdir / f"ndcg-{name.replace(' ', '-')}"
            Pipeline.load(RECALL_BENCHMARK, overrides).run(run_dir)
            metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())["metrics"]
            row["nDCG@5"] = metrics["nDCG@5"]
        rows[name] = row
    return {"documents": len(texts), "settings": rows}


def build(factory: str, store: EmbeddingStore, n: int, **options: int) -> tuple[FaissIndex, dict]:
    """A FAISS index over `store` with its build seconds, size and peak RSS growth."""
    rss_before = peak_rss_mib()
    index = FaissIndex(factory=factory, device="cpu", **options)
    _, build_s = timed(lambda: index.build(store))
    return index, {
        "build_s": build_s,
        "index_mib": len(faiss.serialize_index(index.index)) / 2**20,
        "estimate_mib": estimate_bytes(factory, n, store.dim) / 2**20,
        "peak_rss_growth_mib": peak_rss_mib() - rss_before,
    }


def median_search(index: LabelIndex, queries: np.ndarray, repeats: int) -> tuple[np.ndarray, float]:
    """(top-100 rows, documents/s as the median of `repeats` searches)."""
    times = []
    for _ in range(repeats):
        (_, rows), seconds = timed(lambda: index.search(queries, K))
        times.append(seconds)
    return rows, len(queries) / float(np.median(times))


def bench_search(labels: np.ndarray, queries: np.ndarray, workdir: Path, args: argparse.Namespace) -> dict:
    """exact and Flat (median of --repeats), then HNSW and IVF swept over efSearch / nprobe: recall@100 vs exact
    against documents/s; docs/s ratios are to Flat."""
    n = len(labels)
    store = EmbeddingStore(workdir / f"labels-{n}")
    store.write(range(n), lambda rows: labels[rows.start : rows.stop], chunk_size=262_144, description=f"store {n}")
    exact = ExactIndex(device="cpu")
    exact.build(store)
    truth, exact_docs_per_s = median_search(exact, queries, args.repeats)
    flat, flat_row = build("Flat", store, n)
    flat_rows, flat_docs_per_s = median_search(flat, queries, args.repeats)
    del flat
    methods: dict[str, dict] = {
        "exact (torch, mmap chunks)": {"docs_per_s": exact_docs_per_s, "recall@100": 1.0},
        "Flat": flat_row | {"docs_per_s": flat_docs_per_s, "recall@100": recall(flat_rows, truth)},
    }
    nlist = int(4 * np.sqrt(n))
    sweeps = [
        (f"HNSW{args.hnsw_m}", {"ef_construction": args.ef_construction}, "ef_search", EF_SEARCH),
        (f"IVF{nlist},Flat", {"train_size": min(n, 40 * nlist)}, "nprobe", [p for p in NPROBE if p <= nlist]),
    ]
    for factory, options, knob, values in sweeps:
        index, row = build(factory, store, n, **options)
        row["options"] = options
        row["points"] = []
        for value in values:
            index.set_search(**{knob: value})
            (_, found), seconds = timed(lambda index=index: index.search(queries, K))
            docs_per_s = len(queries) / seconds
            row["points"].append(
                {knob: value, "docs_per_s": docs_per_s, "docs_per_s_vs_flat": docs_per_s / flat_docs_per_s}
                | {"recall@100": recall(found, truth)}
            )
        methods[factory] = row
        del index
    for row in methods.values():
        if "docs_per_s" in row:
            row["docs_per_s_vs_flat"] = row["docs_per_s"] / flat_docs_per_s
    return {"labels": n, "queries": len(queries), "methods": methods}


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


def best_at_target(row: dict) -> dict | None:
    """The fastest swept point with recall@100 >= TARGET, or None."""
    good = [point for point in row.get("points", []) if point["recall@100"] >= TARGET]
    return max(good, key=lambda point: point["docs_per_s"]) if good else None


def knob_of(point: dict) -> str:
    """ "ef_search=128" or "nprobe=64" for a swept point, "" for exact and Flat."""
    return next((f"{key}={point[key]}" for key in ("ef_search", "nprobe") if key in point), "")


def markdown(report: dict) -> str:
    env, enc = report["environment"], report["encoders"]
    settings = enc["settings"]
    float32 = settings["torch float32"]["nDCG@5"]
    lines = [
        "# eztag scale benchmark (CPU)",
        "",
        f"Device: {env['device']} ({env['cpu']}, {env['cpu_threads']} threads); torch {env['torch']}, "
        f"faiss {env['faiss']}, numpy {env['numpy']}.",
        "",
        *[f"- {note}" for note in report["notes"]],
        "",
        f"## Encoders (all-MiniLM-L6-v2, {enc['documents']} debtags test documents)",
        "",
        "Goal: documents/s >= 2.5x SentenceTransformer.encode float32 with nDCG@5 within 0.005 of float32.",
        "",
        "| setting | documents/s | ÷ SentenceTransformer.encode fp32 | min cosine vs fp32 | nDCG@5 (test) | Δ nDCG@5 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in settings.items():
        quality = (
            f"{row['min_cosine_vs_float32']:.4f} | {row['nDCG@5']:.4f} | {row['nDCG@5'] - float32:+.4f}"
            if "nDCG@5" in row
            else "— | — | —"
        )
        lines.append(
            f"| {name} | {row['docs_per_s']:.1f} | {row['speedup_vs_sentence_transformers']:.2f} | {quality} |"
        )
    lines += [
        "",
        "## Top-100 search",
        "",
        "Goals: exact >= Flat documents/s; an ANN >= 10x Flat documents/s at recall@100 >= 0.95 (10^6 labels).",
        "",
        "| labels | method | knob | docs/s | docs/s ÷ Flat | recall@100 vs exact | build s | index MiB (estimate) "
        "| peak RSS growth MiB |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in report["search"]:
        for name, row in run["methods"].items():
            build = (
                f"{row['build_s']:.1f} | {row['index_mib']:.0f} ({row['estimate_mib']:.0f}) "
                f"| {row['peak_rss_growth_mib']:.0f}"
                if "build_s" in row
                else "— | mmap .npy | —"
            )
            for point in row.get("points", [row]):
                knob = knob_of(point)
                lines.append(
                    f"| {run['labels']:,} | {name} | {knob} | {point['docs_per_s']:.0f} "
                    f"| {point['docs_per_s_vs_flat']:.2f} | {point['recall@100']:.3f} | {build} |"
                )
    lines += ["", "Fastest setting at recall@100 >= 0.95:", ""]
    for run in report["search"]:
        for name, row in run["methods"].items():
            best = best_at_target(row)
            if "points" in row:
                found = (
                    f"{knob_of(best)}: {best['docs_per_s_vs_flat']:.2f}x Flat ({best['docs_per_s']:,.0f} documents/s, "
                    f"recall@100 {best['recall@100']:.3f})"
                    if best
                    else "not reached"
                )
                lines.append(f"- {run['labels']:,} labels, {name}: {found}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=1_000_000, help="largest label count (10^5 is always run)")
    parser.add_argument("--device", default="cpu", choices=["cpu"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--encode-documents", type=int, default=500, help="debtags test documents timed per setting")
    parser.add_argument("--distinct", type=int, default=400, help="distinct encoded phrases behind the label vectors")
    parser.add_argument("--exact-queries", type=int, default=1000, help="documents searched per method")
    parser.add_argument("--hnsw-m", type=int, default=32, help="HNSW links per node")
    parser.add_argument("--ef-construction", type=int, default=80, help="HNSW build depth")
    parser.add_argument("--sigma", type=float, default=0.02, help="per-dimension perturbation of label vectors")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = random.Random(0)
    workdir = args.out / "work"
    with gzip.open(DEBTAGS / "test.jsonl.gz", "rt", encoding="utf-8") as handle:
        test_documents = [json.loads(line)["text"] for line in itertools.islice(handle, args.encode_documents)]
    encoders = bench_encoders(test_documents, SETTINGS, args.repeats, workdir)
    print(json.dumps(encoders, indent=1), flush=True)

    label_texts, words, document_texts = vocabulary()
    encoder = load_encoder(EncodeConfig(device="cpu", precision="float32"))
    doc_sample = recombined(50, document_texts, rng)
    base_labels = encoder.encode(phrases(args.distinct, label_texts, words, rng))
    queries = perturbed(encoder.encode(doc_sample), args.exact_queries, args.sigma, seed=2)
    search = []
    for n in [n for n in (100_000, 1_000_000, 10_000_000) if n <= max(args.labels, 100_000)]:
        labels = perturbed(base_labels, n, args.sigma, seed=1)
        search.append(bench_search(labels, queries, workdir, args))
        del labels
        print(json.dumps(search[-1], indent=1), flush=True)
    for path in sorted(workdir.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    workdir.rmdir()

    notes = [
        f"Encoders: documents/s on the first {len(test_documents)} debtags test documents, batch 64, median of "
        f"{args.repeats} interleaved runs; nDCG@5 on all 5,735 test documents (pipelines/recall-benchmark.toml).",
        "Search labels are phrases generated from the debtags vocabulary (a debtags label text plus 1-3 words of the "
        "debtags label and document texts), not real label text.",
        f"Search documents: {len(doc_sample)} recombined debtags sample documents (first sentence of one + another) "
        f"were encoded; the {len(queries)} query vectors are sums of two random such vectors plus seeded "
        f"N(0, {args.sigma}^2) per-dimension noise, renormalised; docs/s is measured on them.",
        f"Label vectors for search: {args.distinct} encoded distinct phrases, each of the N rows the sum of two "
        f"seeded random ones plus N(0, {args.sigma}^2) per-dimension noise, renormalised "
        "(encoding 10^6 labels on this CPU would take hours).",
        f"HNSW: M {args.hnsw_m}, efConstruction {args.ef_construction}; IVF: nlist 4 sqrt(N), trained on 40 nlist "
        "labels. Swept points are single searches; exact and Flat are medians.",
        "10^7 labels: not run (10^7 x 384 float32 = 15 GiB of vectors before any index, plus the perturbation copy).",
    ]
    report = {"environment": environment(args.device), "notes": notes, "encoders": encoders, "search": search}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale-cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "scale-cpu.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
