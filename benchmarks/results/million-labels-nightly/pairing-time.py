"""Time plan_update (pairing a changed set's vectors with the slot files of the cached entries of its family) at
10^6: night 2's 1,001,000 label vectors against the two entries of changed-index.md. Prints the module's path (which
checkout) and the seconds. Their digests are read from a file made once, from the repository's root:

    python -c "from pathlib import Path; from eztag.embeddings import EmbeddingStore; \
      from eztag.index_updates import vector_digests; vector_digests(EmbeddingStore(\
      Path('runs/million-labels/night-b/encode/labels'))).write_parquet('/tmp/night-b-digests.parquet')"

pairing-time.log has the timing command."""

import time
from pathlib import Path

import polars as pl

import eztag.index_updates
from eztag.index_updates import plan_update

print(eztag.index_updates.__file__)
digests = pl.read_parquet("/tmp/night-b-digests.parquet")
start = time.perf_counter()
update = plan_update(Path("/work/main/runs/million-labels/index-cache"), "2f524db771f6b88e", digests, 0.1)
print(f"{time.perf_counter() - start:.3f}", update and update.summary())
