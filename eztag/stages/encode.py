"""Encode: embed the label set and the documents into chunked, resumable embedding stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eztag.encoding import EncodeConfig, model_fingerprint, write_embeddings
from eztag.stages.contract import StageInputs, no_pipeline_checks

NAME = "encode"
HELP = "embed labels and documents"
REQUIRES = ("ingest",)
OPTIONAL: tuple[str, ...] = ()
CONFLICTS: dict[str, str] = {}
PROVIDES = {"encode": "."}
PATH_FIELDS = ("model", "label_cache")
check_pipeline = no_pipeline_checks
fingerprint = model_fingerprint
Config = EncodeConfig


def run(config: EncodeConfig, out_dir: Path, inputs: StageInputs) -> dict[str, Any]:
    """Write `labels/` and `documents/` embedding stores; label vectors come from `label_cache` when it has them."""
    return write_embeddings(config, inputs["ingest"], out_dir, inputs.engine)
