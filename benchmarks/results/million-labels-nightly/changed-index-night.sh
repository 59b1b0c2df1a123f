#!/bin/bash
# night.sh LABELS RUN_DIR INDEX_CACHE [extra --set ...]
labels=$1; run=$2; cache=$3; shift 3
cd /work/main
/usr/bin/time -v nice eztag run benchmarks/pipelines/million-labels.toml \
  --set "ingest.labels=\"/work/main/runs/million-labels/$labels\"" \
  --set 'encode.label_cache="/work/main/runs/million-labels/label-cache"' \
  --set 'index.backend="faiss"' --set 'index.options={factory="HNSW32",ef_construction=80,ef_search=512}' \
  --set "index.cache=\"/work/main/runs/million-labels/$cache\"" \
  --run-dir "runs/million-labels/$run" "$@"
