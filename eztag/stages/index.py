"""Index: build the label index, save it with its label-id map, and measure recall of approximate indexes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eztag.indexing import IndexConfig, write_index
from eztag.stages.contract import StageInputs, no_fingerprint, no_pipeline_checks

NAME = "index"
HELP = "build the label index"
REQUIRES = ("ingest", "encode")
OPTIONAL = ("synonyms",)
CONFLICTS: dict[str, str] = {}
PROVIDES = {"index": "."}
PATH_FIELDS = ("cache",)
check_pipeline = no_pipeline_checks
fingerprint = no_fingerprint
Config = IndexConfig


def run(config: IndexConfig, out_dir: Path, inputs: StageInputs) -> dict[str, Any]:
    """Build the index over encode/labels (or synonyms/vectors), or copy it from `cache`, and save it with
    label_ids.parquet and report.json."""
    return write_index(config, inputs["ingest"], inputs["encode"], inputs.get("synonyms"), out_dir)
