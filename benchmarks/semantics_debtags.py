"""Label-semantics ablation on debtags: every knob chosen on the dev split, reported on the test split.

    OMP_NUM_THREADS=1 python benchmarks/semantics_debtags.py                   # default encoder (all-MiniLM-L6-v2)
    OMP_NUM_THREADS=1 python benchmarks/semantics_debtags.py --encoder PATH --name distilled
    OMP_NUM_THREADS=1 python benchmarks/semantics_debtags.py --labels bare     # bare tag names, SmolLM2 synonyms
    OMP_NUM_THREADS=1 python benchmarks/semantics_debtags.py --llm qwen
    OMP_NUM_THREADS=1 python benchmarks/semantics_debtags.py --llm qwen --labels bare

Rows: zero-shot; + synonyms (SmolLM2-135M on the CPU, or Qwen2.5-Coder-1.5B through vLLM with `--llm qwen`; from
the generation cache, generated when missing) with max, centroid and local-centre aggregation (ε and local k chosen
on dev); + refinement of the best of these (threshold and pseudo-positive depth chosen on dev, pseudo-positives from
the dev texts, no labels); + ConSE on top (T, alpha, temperature chosen on dev); zero-shot + ConSE alone.
`--labels bare` reads data/debtags/labels-bare.jsonl (the tags' bare names, no descriptions) for both the label
vectors and the synonym prompts. Each run's results are kept under its row name (the encoder, plus the LLM and the
labels when they are not the defaults) in benchmarks/results/semantics-debtags.json, with the generation throughput
and the synonyms' statistics, and the Markdown table lists every row run so far.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from eztag import metrics, semantics
from eztag.artifacts import config_hash, read_shards, write_json, write_npy, write_text
from eztag.comparison import Interval, paired_bootstrap
from eztag.embeddings import EmbeddingStore
from eztag.encoders import get_encoder
from eztag.indexes.exact import ExactIndex
from eztag.indexes.multi import MultiVectorIndex
from eztag.stages import synonyms as synonyms_stage
from eztag.stages.tag import ConSE, search
from eztag.templates import render

DATA = Path(__file__).resolve().parents[1] / "data" / "debtags"
VECTOR_CACHE = Path("runs/semantics-debtags")
KS = (1, 5, 10)
COLUMNS = ("P@1", "P@5", "R@10", "nDCG@5")
EPS_GRID = (None, 0.3, 0.4, 0.5, 0.6)
LOCAL_K_GRID = (2, 3, 4)
REFINE_GRID = [(m, t) for m in (3, 10) for t in (0.0, 0.2, 0.4, 0.6, 0.7, 0.8)]
CONSE_GRID = [
    ConSE(top, alpha, temp) for top in (1, 3, 5, 10) for alpha in (0.1, 0.2, 0.3, 0.5) for temp in (0.02, 0.1)
]
LABEL_TEMPLATE = "{text}[ ({description})]"  # a bare label (empty description) is its text alone
LABEL_FILES = {"described": "labels.jsonl", "bare": "labels-bare.jsonl"}
SYNONYM_LLMS: dict[str, dict[str, Any]] = {  # synonyms_stage.Config fields besides n and domain
    "smollm2": {"shard_size": 32, "options": {"device": "cpu"}},
    "qwen": {"backend": "vllm", "model": "qwen2.5-coder-1.5b", "shard_size": 392, "options": {"max_model_len": 1024}},
}


def read_split(name: str) -> tuple[list[str], list[list[str]]]:
    with gzip.open(DATA / f"{name}.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [row["text"] for row in rows], [row["labels"] for row in rows]


def generate(
    config: synonyms_stage.Config, pairs: list[tuple[str, str]], cache_dir: Path
) -> tuple[list[str], dict[str, Any]]:
    """The raw generation of each (label, description) and its throughput: the labels the cache lacked and the wall
    seconds of the generation (model loading included), or that everything came from the cache."""
    stored = dict(read_shards(cache_dir, synonyms_stage.CACHE_SCHEMA).iter_rows())
    todo = len({synonyms_stage.cache_key(config, label, description) for label, description in pairs} - stored.keys())
    started = time.perf_counter()
    raw = synonyms_stage.generate(config, pairs, cache_dir)
    seconds = time.perf_counter() - started
    if not todo:
        return raw, {"from_cache": True}
    return raw, {"labels_generated": todo, "seconds": round(seconds, 2), "labels_per_second": round(todo / seconds, 3)}


class Bench:
    """Encoded labels, synonyms and both splits, and the scoring of one configuration."""

    def __init__(
        self, encoder_name: str, labels: Path, config: synonyms_stage.Config, cache_dir: Path, work: Path
    ) -> None:
        self.work = work
        self.labels = pl.read_ndjson(labels).rename({"id": "label_id"})
        self.row_of = {label_id: i for i, label_id in enumerate(self.labels["label_id"])}
        encoder = get_encoder("sentence-transformers", encoder_name, device="cpu", precision="float32")
        self.encode = encoder.encode
        pairs = [(t, d or "") for t, d in self.labels.select("text", "description").iter_rows()]
        self.own = self.encode_labels(pairs)
        self.splits = {}
        self.encode_ms = {}
        for split in ("dev", "test"):
            texts, gold = read_split(split)
            self.splits[split] = (
                self.documents(encoder.fingerprint, split, texts),
                [{self.row_of[label] for label in labels} for labels in gold],
            )
        raw, self.generation = generate(config, pairs, cache_dir)
        self.table = synonyms_stage.candidate_rows(self.labels, raw, config)
        candidates = self.table.filter(pl.col("reason").is_null())
        self.owners = candidates["label_row"].to_numpy()
        self.synonyms = self.encode_labels(
            [(s, pairs[row][1]) for s, row in zip(candidates["synonym"], self.owners, strict=True)]
        )
        self.synonym_stats = {
            "generated_lines": self.table.height,
            "dropped_by_reason": dict(self.table["reason"].drop_nulls().value_counts(sort=True).iter_rows()),
            "candidates_after_cleaning": len(self.owners),
            "labels_with_a_synonym_after_cleaning": len(np.unique(self.owners)),
        }
        self.own_store = self.store("own", self.own)
        self.agreement = {
            m: synonyms_stage.refine_agreement(self.own_store, self.splits["dev"][0], self.synonyms, self.owners, m)
            for m in sorted({m for m, _ in REFINE_GRID})
        }

    def encode_labels(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """Unit vectors of (text, description) pairs rendered through LABEL_TEMPLATE; never cached on disk, so label
        and synonym vectors always follow the chosen label file and LLM."""
        return semantics.unit(self.encode([render(LABEL_TEMPLATE, {"text": t, "description": d}) for t, d in pairs]))

    def documents(self, fingerprint: dict, split: str, texts: list[str]) -> np.ndarray:
        """Document vectors of a split, cached under runs/semantics-debtags by the encoder's fingerprint (its model
        files, so a model retrained in place is encoded again) and shared by every label file and LLM; encoding is
        the slow part on a CPU."""
        path = VECTOR_CACHE / config_hash([fingerprint, split, len(texts)]) / "documents.npy"
        timing = path.with_name("encode_ms.json")
        if not path.exists():
            started = time.perf_counter()
            vectors = self.encode(texts)
            write_json(timing, {"ms_per_doc": 1000 * (time.perf_counter() - started) / len(texts)})
            write_npy(path, vectors)
        self.encode_ms[split] = round(json.loads(timing.read_text())["ms_per_doc"], 3)
        return np.load(path)

    def store(self, name: str, vectors: np.ndarray) -> EmbeddingStore:
        """A fresh embedding store of `vectors` (a store skips chunks already on disk, so never reuse a folder)."""
        store = EmbeddingStore(Path(tempfile.mkdtemp(prefix=name, dir=self.work)))
        store.write(list(range(len(vectors))), lambda rows: vectors[list(rows)], chunk_size=1 << 20)
        return store

    def keep_mask(self, eps: float | None, refine: tuple[int, float] | None) -> np.ndarray:
        keep = np.ones(len(self.owners), dtype=bool)
        if eps is not None:
            keep &= synonyms_stage.prune(self.own, self.synonyms, self.owners, eps)
        if refine is not None:
            agreement = self.agreement[refine[0]]
            keep &= ~(agreement < refine[1])
        return keep

    def index(self, setting: dict[str, Any]) -> Any:
        if setting.get("aggregation") is None:
            index = ExactIndex(device="cpu")
            index.build(self.own_store)
            return index
        keep = self.keep_mask(setting["eps"], setting.get("refine"))
        vectors = np.vstack([self.own, self.synonyms[keep]])
        owners = np.concatenate([np.arange(len(self.own)), self.owners[keep]])
        index = MultiVectorIndex(
            ExactIndex(device="cpu"), owners, aggregation=setting["aggregation"], local_k=setting.get("local_k", 3)
        )
        store = self.store("vectors", vectors)
        index.build(store)
        shutil.rmtree(store.directory)  # the index holds the vectors in memory now
        return index

    def score(self, setting: dict[str, Any], split: str) -> dict[str, Any]:
        """Mean metrics of `setting` on `split`, its extra vectors and search ms/document; `per_document` holds each
        document's P@1 and nDCG@5 (documents with ground truth) for the paired intervals."""
        index = self.index(setting)
        queries, gold = self.splits[split]
        started = time.perf_counter()
        _, rows = search(index, queries, max(KS), setting.get("conse"), self.own)
        seconds = time.perf_counter() - started
        values = metrics.evaluate(rows, gold, len(self.own), KS)
        out: dict[str, Any] = {column: round(values[column], 4) for column in COLUMNS}
        labelled = [row for row, labels in enumerate(gold) if labels]
        hits = metrics.hit_matrix(rows[labelled], [gold[row] for row in labelled])
        n_gold = np.array([len(gold[row]) for row in labelled], dtype=np.float64)
        out["per_document"] = {
            "P@1": metrics.per_document(hits, n_gold, 1)["P@1"],
            "nDCG@5": metrics.per_document(hits, n_gold, 5)["nDCG@5"],
        }
        out["ms_per_doc"] = round(1000 * seconds / len(queries), 3)
        out["extra_vectors"] = int(index.vectors.shape[0] - len(self.own)) if isinstance(index, MultiVectorIndex) else 0
        if isinstance(index, MultiVectorIndex) and setting.get("conse") is None:
            _, reference = index.exhaustive(queries, max(KS))
            out["recall@10_vs_exhaustive"] = round(
                float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, reference, strict=True)])), 4
            )
        return out

    def best(self, settings: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, float]]:
        """The setting with the best dev nDCG@5 (ties: the first) and its dev scores."""
        scored = [(setting, self.score(setting, "dev")) for setting in settings]
        return max(scored, key=lambda pair: pair[1]["nDCG@5"])

    def holdout(self, setting: dict[str, Any], fraction: float = 0.2, seed: int = 0) -> dict[str, float]:
        """Test R@10 of held-out labels (own text only, every other label with its synonyms) against zero-shot."""
        held = np.random.default_rng(seed).permutation(len(self.own))[: int(fraction * len(self.own))]
        saved = self.owners, self.synonyms
        mask = ~np.isin(self.owners, held)
        self.owners, self.synonyms = self.owners[mask], self.synonyms[mask]
        agreement = self.agreement
        self.agreement = {m: values[mask] for m, values in agreement.items()}
        try:
            found = {}
            for name, current in (("zero_shot", {"aggregation": None}), ("with_synonyms", setting)):
                queries, gold = self.splits["test"]
                _, rows = search(self.index(current), queries, 10, None, self.own)
                hits = total = 0
                for row, labels in zip(rows, gold, strict=True):
                    wanted = labels & set(held.tolist())
                    hits += len(wanted & set(row.tolist()))
                    total += len(wanted)
                found[name] = round(hits / total, 4)
        finally:
            self.owners, self.synonyms = saved
            self.agreement = agreement
        return {"held_out_labels": len(held), "R@10_of_held_out_labels": found}

    def label_changes(self, setting: dict[str, Any], shown: int = 5) -> dict[str, Any]:
        """Per label, how many of its test documents retrieve it in their top 10 under `setting` and under zero-shot:
        how many labels gained and lost, and the `shown` labels that lost and gained most, with their kept
        synonyms (why a method helps or hurts)."""
        queries, gold = self.splits["test"]
        found = {}
        for name, current in (("zero_shot", {"aggregation": None}), ("setting", setting)):
            _, rows = search(self.index(current), queries, 10, current.get("conse"), self.own)
            hits = np.zeros(len(self.own), dtype=np.int64)
            for row, labels in zip(rows, gold, strict=True):
                hits[list(labels & set(row.tolist()))] += 1
            found[name] = hits
        documents = np.zeros(len(self.own), dtype=np.int64)
        for labels in gold:
            documents[list(labels)] += 1
        change = found["setting"] - found["zero_shot"]
        kept = self.keep_mask(setting["eps"], setting.get("refine"))
        synonyms = self.table.filter(pl.col("reason").is_null())["synonym"].to_numpy()

        def label(row: int) -> dict[str, Any]:
            return {
                "label": self.labels["text"][int(row)],
                "test_documents": int(documents[row]),
                "found_zero_shot": int(found["zero_shot"][row]),
                "found": int(found["setting"][row]),
                "kept_synonyms": synonyms[kept & (self.owners == row)].tolist(),
            }

        order = np.argsort(change, kind="stable")
        return {
            "labels_gained": int((change > 0).sum()),
            "labels_lost": int((change < 0).sum()),
            "labels_unchanged_with_test_documents": int(((change == 0) & (documents > 0)).sum()),
            "most_lost": [label(row) for row in order[:shown] if change[row] < 0],
            "most_gained": [label(row) for row in order[::-1][:shown] if change[row] > 0],
        }


def describe(setting: dict[str, Any]) -> str:
    parts = []
    if setting.get("aggregation"):
        parts.append(f"aggregation={setting['aggregation']}")
        if setting["aggregation"] == "local_centre":
            parts.append(f"local_k={setting['local_k']}")
        parts.append(f"eps={setting['eps']}")
    if setting.get("refine"):
        parts.append(f"refine_top_m={setting['refine'][0]}, threshold={setting['refine'][1]}")
    if setting.get("conse"):
        conse = setting["conse"]
        parts.append(f"conse T={conse.top}, alpha={conse.alpha}, temperature={conse.temperature}")
    return ", ".join(parts) or "-"


def ablation(bench: Bench) -> dict[str, Any]:
    rows: list[tuple[str, dict[str, Any]]] = [("zero-shot", {"aggregation": None})]
    per_aggregation = []
    for aggregation in ("max", "centroid", "local_centre"):
        ks = LOCAL_K_GRID if aggregation == "local_centre" else (3,)
        grid = [{"aggregation": aggregation, "eps": eps, "local_k": k} for eps in EPS_GRID for k in ks]
        per_aggregation.append(bench.best(grid))
        rows.append((f"+ synonyms ({aggregation})", per_aggregation[-1][0]))
    best_synonyms, best_dev = max(per_aggregation, key=lambda pair: pair[1]["nDCG@5"])
    refined, refined_dev = bench.best([{**best_synonyms, "refine": refine} for refine in REFINE_GRID])
    rows.append(("+ refinement", refined))
    best_semantics = refined if refined_dev["nDCG@5"] > best_dev["nDCG@5"] else best_synonyms
    rows.append(("+ ConSE", bench.best([{**best_semantics, "conse": conse} for conse in CONSE_GRID])[0]))
    rows.append(("zero-shot + ConSE", bench.best([{"aggregation": None, "conse": conse} for conse in CONSE_GRID])[0]))
    table = []
    for name, setting in rows:
        dev, test = bench.score(setting, "dev"), bench.score(setting, "test")
        del dev["per_document"]
        table.append({"row": name, "setting": describe(setting), "dev": dev, "test": test})
    zero_shot = table[0]["test"]["per_document"]
    for row in table:
        row["vs_zero_shot"] = paired_differences(row["test"]["per_document"], zero_shot)
    for row in table:
        del row["test"]["per_document"]
    kept = bench.keep_mask(best_semantics["eps"], best_semantics.get("refine"))
    return {
        "rows": table,
        "encode_ms_per_doc": bench.encode_ms["test"],
        "synonym_generation": bench.generation,
        "synonym_stats": bench.synonym_stats,
        "synonyms": {
            "labels": len(bench.own),
            "generated_lines": bench.synonym_stats["generated_lines"],
            "candidates_after_sanitising": bench.synonym_stats["candidates_after_cleaning"],
            "dropped_by_sanitising": bench.synonym_stats["dropped_by_reason"],
            "kept_in_best_setting": int(kept.sum()),
            "labels_with_a_kept_synonym": len(np.unique(bench.owners[kept])),
        },
        "holdout": bench.holdout(best_semantics),
        "label_changes": bench.label_changes(best_semantics),
    }


def paired_differences(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean per-document difference of each metric to `theirs` with its 95% paired bootstrap interval (1,000
    resamples, seeded)."""
    names = list(ours)
    stacked = [np.stack([values[name] for name in names]) for values in (theirs, ours)]
    observed, low, high = paired_bootstrap(*stacked, means=len(names), resamples=1000, confidence=0.95)
    return {
        name: {"difference": round(float(value), 4), "low": round(float(lo), 4), "high": round(float(hi), 4)}
        for name, value, lo, hi in zip(names, observed, low, high, strict=True)
    }


MARKDOWN_NOTES = (
    ("synonym_generation", "Synonym generation"),
    ("synonym_stats", "Synonym statistics"),
    ("synonyms", "Synonyms"),
    ("holdout", "Hold-out check"),
    (
        "label_changes",
        "Labels that moved most in the best synonym setting (test documents finding the label in their top 10)",
    ),
)


def interval(row: dict[str, Any], metric: str) -> str:
    """`+0.0123 [+0.0050, +0.0200]`, or - for the zero-shot row and rows stored before intervals were kept."""
    if "vs_zero_shot" not in row or row["row"] == "zero-shot":
        return "-"
    return Interval(**row["vs_zero_shot"][metric]).text


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for encoder, result in results.items():
        lines += [
            f"### Encoder: {encoder}",
            "",
            f"Test split (5,735 documents, 392 labels); every setting chosen on dev by nDCG@5. Document encoding: "
            f"{result['encode_ms_per_doc']} ms/doc (not in ms/doc below, which is search + aggregation + ConSE).",
            "",
            "| row | setting (chosen on dev) | P@1 | P@5 | R@10 | nDCG@5 | nDCG@5 vs zero-shot [95%] "
            "| P@1 vs zero-shot [95%] | dev nDCG@5 | extra vectors | ms/doc | R@10 vs exhaustive |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in result["rows"]:
            test = row["test"]
            cells = " | ".join(f"{test[column]:.4f}" for column in COLUMNS)
            versus = " | ".join(interval(row, metric) for metric in ("nDCG@5", "P@1"))
            lines.append(
                f"| {row['row']} | {row['setting']} | {cells} | {versus} | {row['dev']['nDCG@5']:.4f} | "
                f"{test['extra_vectors']} | {test['ms_per_doc']:.3f} | {test.get('recall@10_vs_exhaustive', '-')} |"
            )
        lines.append("")
        for key, title in MARKDOWN_NOTES:
            if key in result:  # rows stored before a note existed lack it
                lines += [f"{title}: `{json.dumps(result[key])}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--encoder", default="default", help="sentence-transformers model path (default all-MiniLM-L6-v2)"
    )
    parser.add_argument(
        "--name",
        default=None,
        help="row name of this encoder (default: the --encoder value); the LLM and the labels are appended when they "
        "are not the defaults",
    )
    parser.add_argument("--llm", choices=SYNONYM_LLMS, default="smollm2", help="the LLM that writes the synonyms")
    parser.add_argument(
        "--labels", choices=LABEL_FILES, default="described", help="label texts: with descriptions, or bare tag names"
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/synonym-cache"), help="synonym generation cache")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    path = args.out / "semantics-debtags.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    name = args.name or args.encoder
    if (args.llm, args.labels) != ("smollm2", "described"):
        name = f"{name} · {args.llm} synonyms · {args.labels} labels"
    config = synonyms_stage.Config(n=5, domain="software package", **SYNONYM_LLMS[args.llm])
    with tempfile.TemporaryDirectory() as work:
        bench = Bench(args.encoder, DATA / LABEL_FILES[args.labels], config, args.cache_dir, Path(work))
        results[name] = ablation(bench)
    write_json(path, results)
    write_text(args.out / "semantics-debtags.md", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
