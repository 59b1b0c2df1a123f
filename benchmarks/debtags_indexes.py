"""Index agreement on the debtags test split: exact vs FAISS Flat (same top-10?) and ANN recall@10 vs exact.

    python benchmarks/debtags_indexes.py --out benchmarks/results/

Runs pipelines/recall-benchmark.toml once per index backend in its run directory (ingest and encode run once and
are skipped after; rerun the pipeline afterwards for its k = 100 tags and metrics), keeps each backend's tags and
compares every backend's top-10 with exact search, document by document. Two rankings count as the same top-10
when they hold the same labels apart from labels tied within 1e-5 with the 10th score (float summation order
differs between torch and FAISS).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import faiss
import polars as pl

from eztag.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]

BACKENDS = {
    "exact": ["index.backend='exact'"],
    "faiss Flat": ["index.backend='faiss'", "index.options={factory='Flat'}"],
    "faiss HNSW32 ef=64": ["index.backend='faiss'", "index.options={factory='HNSW32', ef_search=64}"],
    "faiss IVF16,Flat nprobe=4": ["index.backend='faiss'", "index.options={factory='IVF16,Flat', nprobe=4}"],
}
TIE = 1e-5


def top10(run_dir: Path) -> pl.DataFrame:
    """doc_id, label_id, score of each document's first 10 tags."""
    return pl.read_parquet(run_dir / "tag" / "tags.parquet").filter(pl.col("rank") <= 10)


def agreement(exact: pl.DataFrame, other: pl.DataFrame) -> dict[str, float]:
    """Documents with the same top-10 (ties allowed) and the mean recall@10 of `other` against `exact`."""
    joined = (
        exact.group_by("doc_id")
        .agg("label_id", "score")
        .join(other.group_by("doc_id").agg(pl.col("label_id").alias("other")), on="doc_id")
    )
    same = recall = 0.0
    for labels, scores, found in joined.select("label_id", "score", "other").iter_rows():
        cutoff = min(scores) + TIE
        clear = {label for label, score in zip(labels, scores, strict=True) if score > cutoff}
        same += clear <= set(found) and len(found) == len(labels)
        recall += len(set(labels) & set(found)) / len(labels)
    return {"same_top10": same / joined.height, "recall@10": recall / joined.height, "documents": joined.height}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "debtags-test")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    reference = None
    for name, overrides in BACKENDS.items():
        pipeline = Pipeline.load(ROOT / "pipelines" / "recall-benchmark.toml", ["tag.k=10", *overrides])
        pipeline.run(args.run_dir, until="tag")
        tags = top10(args.run_dir)
        reference = tags if reference is None else reference
        report = json.loads((args.run_dir / "index" / "report.json").read_text())
        results[name] = {
            **agreement(reference, tags),
            "index_recall_vs_exact": report.get("recall_vs_exact"),
        }
        print(name, results[name])
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"faiss": faiss.__version__, "split": "debtags test", "results": results}
    (args.out / "debtags-indexes.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# Index agreement on the debtags test split (faiss {faiss.__version__}, CPU)",
        "",
        "| index | documents with the same top-10 as exact | recall@10 vs exact |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {row['same_top10']:.4f} | {row['recall@10']:.4f} |" for name, row in results.items()]
    (args.out / "debtags-indexes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
