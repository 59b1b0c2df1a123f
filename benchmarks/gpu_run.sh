#!/usr/bin/env bash
# The GPU measurements behind benchmarks/results/*-h200.* (named by the GPU: h100, h200, ...): one process per part,
# each with its own time limit (one failure does not cost the others), on a GPU host with torch, transformers and
# sentence-transformers but no package index. Wheels it lacks travel in .gpu/whl/ (git-ignored), fetched here with:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .gpu/whl polars==1.28.1 datasets dill multiprocess
# (polars at its floor: one 35 MB wheel, where 2.x is two of 54 MB; carry [".gpu"] with the checkout's ~10 MB.)
# Run from the project's root: `bash benchmarks/gpu_run.sh [PART ...]` (parts: judge, profile, exact, encode,
# encode-compile, cold-start, million; default judge exact encode cold-start); output in $OUT. BUDGET (seconds,
# default 540) bounds the whole script so that it ends inside one 600 s device call: each part gets its own limit or
# what is left, whichever is less, and a part with under 20 s left is skipped and says so. MILLION_LABELS (default
# 1000000) sizes the million part.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD
if ls .gpu/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
# "NVIDIA H100 80GB HBM3" -> h100, "NVIDIA H200" -> h200: the results' names
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr 'A-Z' 'a-z' | grep -o '[a-z][0-9]\+' | head -1)
GPU=${GPU:-gpu}
python3 -c "import sys, torch, transformers, sentence_transformers; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'sentence-transformers', sentence_transformers.__version__)"
T0=$(date +%s)
BUDGET=${BUDGET:-540}
step() {
  local limit=$1; shift; local s left; s=$(date +%s); left=$((BUDGET - (s - T0) - 5))
  if [ "$left" -lt 20 ]; then echo "### skipped, ${left}s of the ${BUDGET}s budget left: $*"; return; fi
  [ "$left" -lt "$limit" ] && limit=$left
  echo "### $* (limit ${limit}s) at +$((s-T0))s"; timeout -k 5 "$limit" "$@"; echo "### exit $? after $(( $(date +%s)-s ))s"
}
M=/tmp/eztag-random-models
PARTS=${*:-judge exact encode cold-start}
step 120 python3 benchmarks/random_models.py "$M"
for part in $PARTS; do
  case $part in
    judge) step 240 python3 benchmarks/judge_paths.py --model "$M/qwen2.5-coder-1.5b" --out "$OUT/judge-paths-$GPU" ;;
    profile) step 120 python3 benchmarks/judge_paths.py --model "$M/qwen2.5-coder-1.5b" --profile --out "$OUT/judge-$GPU" ;;
    exact) step 150 python3 benchmarks/gpu_scale.py --out "$OUT/exact-$GPU" ;;
    encode) step 150 python3 benchmarks/gpu_scale.py --part encode --models-dir "$M" --out "$OUT/encode-$GPU" ;;
    encode-compile)  # the encode part with eztag's encoder also under torch.compile (compiling takes a while)
      step 240 python3 benchmarks/gpu_scale.py --part encode --compile --models-dir "$M" \
        --out "$OUT/encode-compile-$GPU" ;;
    cold-start)
      # pipelines/cold-start.toml on 1,069 documents with the random-weight models, the transformers judge at its
      # GPU defaults (scoring auto = batched); stage times from the manifest
      step 240 python3 -m eztag.cli run pipelines/cold-start.toml --run-dir /tmp/runs/cs \
        --set encode.model=\"$M/all-minilm-l6-v2\" --set judge.backend=\"transformers\" \
        --set judge.model=\"$M/qwen2.5-coder-1.5b\" --set 'judge.options={}' --set judge.shard_size=4096 \
        --set judge.cache_dir=\"/tmp/runs/judge-cache\" --set mine.documents_limit=1069
      cp /tmp/runs/cs/manifest.json "$OUT/cold-start-$GPU-manifest.json" 2>/dev/null
      cp /tmp/runs/cs/judge/report.json "$OUT/cold-start-$GPU-judge-report.json" 2>/dev/null ;;
    million)
      # benchmarks/million_labels.py with the random-weight encoder: stage times and peak memory on this host (its P@k
      # mean nothing with random weights)
      step 300 python3 benchmarks/million_labels.py --labels "${MILLION_LABELS:-1000000}" --out "$OUT" \
        --set encode.model=\"$M/all-minilm-l6-v2\" ;;
  esac
done
echo "### total $(( $(date +%s)-T0 ))s"
