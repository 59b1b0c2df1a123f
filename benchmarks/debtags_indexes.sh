#!/usr/bin/env bash
# Index agreement on the debtags test split: each index backend's top-k against exact search, and the metrics with
# paired bootstrap intervals (eztag compare). The recall benchmark pipeline once per backend; the exact run's ingest
# and encode folders are copied into the others (their manifest entries match, so only index, tag and evaluate run).
#   bash benchmarks/debtags_indexes.sh   # -> benchmarks/results/debtags-indexes/comparison.{md,html}, recall_at_k.png
set -euo pipefail
cd "$(dirname "$0")/.."
runs=runs/debtags-indexes
pipeline=pipelines/recall-benchmark.toml
eztag run "$pipeline" --run-dir "$runs/exact"
declare -A options=(
  [faiss-flat]='index.options={factory="Flat"}'
  [faiss-hnsw32-ef64]='index.options={factory="HNSW32", ef_search=64}'
  [faiss-ivf16-nprobe4]='index.options={factory="IVF16,Flat", nprobe=4}'
)
for name in faiss-flat faiss-hnsw32-ef64 faiss-ivf16-nprobe4; do
  rm -rf "${runs:?}/$name" && cp -r "$runs/exact" "$runs/$name"
  eztag run "$pipeline" --run-dir "$runs/$name" --set 'index.backend="faiss"' --set "${options[$name]}"
done
eztag compare "$runs/exact" "$runs"/faiss-{flat,hnsw32-ef64,ivf16-nprobe4} --out benchmarks/results/debtags-indexes
