"""Time the steps of an index update at 10^6 outside the pipeline: digests, pairing with the cached entries, reading
the base index, adding the new vectors, writing the index.

python changed-index-parts.py FAMILY BASE_KEY (from the repository root, after the nights of changed-index.md)."""

import shutil
import sys
import time
from pathlib import Path

import polars as pl

from eztag.embeddings import EmbeddingStore, gather_rows
from eztag.index_updates import numbered, pair_with, plan_update, vector_digests
from eztag.indexes.faiss import FaissIndex

family, base_key = sys.argv[1:3]
cache = Path("runs/million-labels/index-cache")
labels = EmbeddingStore(Path("runs/million-labels/night-b/encode/labels"))
times = [time.perf_counter()]
digests = vector_digests(labels)
times.append(time.perf_counter())
best = plan_update(cache, family, digests, 0.1)
times.append(time.perf_counter())
print("entries paired:", len(list(cache.glob("*.slots.parquet"))), "best:", best and best.summary())
base = cache / base_key
update = pair_with(base, pl.read_parquet(f"{base}.{family}.slots.parquet"), numbered(digests, "row"))
print("update of the first night's entry:", update.summary())
times.append(time.perf_counter())
index = FaissIndex.load(base, factory="HNSW32", ef_search=512, device="cpu")
times.append(time.perf_counter())
added = gather_rows(labels, update.added_rows)
times.append(time.perf_counter())
index.update(added, update.slot_rows)
times.append(time.perf_counter())
out = Path("/tmp/bench/updated")
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
index.save(out)
times.append(time.perf_counter())
steps = {
    "vector digests": (0, 1),
    "pair with the cached entries": (1, 2),
    "read the base index": (3, 4),
    "gather the added vectors": (4, 5),
    "add the new vectors": (5, 6),
    "write the index": (6, 7),
}
for name, (start, stop) in steps.items():
    print(f"| {name} | {times[stop] - times[start]:.2f} |")
