"""Mine: candidate (document, label) pairs for the judge from the student's index, optionally with BM25 ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from eztag.artifacts import write_json, write_parquet
from eztag.embeddings import EmbeddingStore, gather_rows
from eztag.indexing import load_index
from eztag.mining import MineConfig, mine, pick_documents, within_budget
from eztag.stages.contract import StageInputs, no_fingerprint, no_pipeline_checks

NAME = "mine"
HELP = "mine candidate labels per document for the judge"
REQUIRES = ("ingest", "encode", "index")
OPTIONAL: tuple[str, ...] = ()
CONFLICTS: dict[str, str] = {}
PROVIDES: dict[str, str] = {}
PATH_FIELDS: tuple[str, ...] = ()
check_pipeline = no_pipeline_checks
fingerprint = no_fingerprint
Config = MineConfig


def run(config: MineConfig, out_dir: Path, inputs: StageInputs) -> dict[str, Any]:
    """Write candidates.parquet: dense top-k (and BM25 top-k) labels of the chosen documents, those within the
    budget when there is one."""
    ingest_dir = inputs["ingest"]
    encode_dir = inputs["encode"]
    index_dir = inputs["index"]
    documents = pl.read_parquet(ingest_dir / "documents.parquet")
    labels = pl.read_parquet(ingest_dir / "labels.parquet")
    doc_rows = pick_documents(documents.height, config)
    document_vectors = gather_rows(EmbeddingStore(encode_dir / "documents"), doc_rows)
    index = load_index(index_dir)
    mined = mine(config, documents, labels, doc_rows, document_vectors, index, EmbeddingStore(encode_dir / "labels"))
    candidates = within_budget(mined, config)
    write_parquet(out_dir / "candidates.parquet", candidates)
    counts = candidates["source"].value_counts()
    within = candidates["doc_id"].n_unique()
    summary = {
        "documents": len(doc_rows),
        "candidates": candidates.height,
        "documents_within_budget": within,
        "candidates_over_budget": mined.height - candidates.height,
        "per_document": round(candidates.height / max(1, within), 2),
        "by_source": dict(zip(counts["source"].to_list(), counts["count"].to_list(), strict=True)),
    }
    write_json(out_dir / "report.json", summary)
    return summary
