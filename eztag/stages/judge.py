"""Judge: score the mined candidates with an LLM judge, through a resumable cache of Parquet shards.

Every judgment is cached under sha256(model id, template name@version, domain, truncated document, label,
description). A run loads every shard, judges only the pairs with no stored score (each once), and writes each
scored batch as a new shard atomically: a killed run loses at most the batch in flight, and a rerun redoes nothing
stored. Failures are kept in the shards for the record but are judged again by the next run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from eztag import plots
from eztag.artifacts import write_json, write_parquet
from eztag.judging import JudgeConfig, build_judge, judge_cache, judge_candidates, yes_rate_warning
from eztag.stages.contract import StageInputs, no_fingerprint, no_pipeline_checks

log = logging.getLogger(__name__)

NAME = "judge"
HELP = "score candidate labels with an LLM relevance judge"
REQUIRES = ("ingest", "mine")
OPTIONAL: tuple[str, ...] = ()
CONFLICTS: dict[str, str] = {}
PROVIDES: dict[str, str] = {}
PATH_FIELDS = ("model", "cache_dir")
check_pipeline = no_pipeline_checks
fingerprint = no_fingerprint
Config = JudgeConfig


def run(config: JudgeConfig, out_dir: Path, inputs: StageInputs) -> dict[str, Any]:
    """Write judgments.parquet, report.json and log_odds.png."""
    ingest_dir = inputs["ingest"]
    mine_dir = inputs["mine"]
    cache_dir = judge_cache(config, out_dir)  # a bad cache folder fails before the model loads
    judge = build_judge(config)
    candidates = pl.read_parquet(mine_dir / "candidates.parquet")
    judgments, report = judge_candidates(config, judge, ingest_dir, candidates, cache_dir, inputs.engine)
    write_parquet(out_dir / "judgments.parquet", judgments)
    report.update(model=judge.model_id, template=judge.template.key, backend=config.backend, settings=judge.settings)
    write_json(out_dir / "report.json", report)
    warning = yes_rate_warning(report["yes_rate"], report["pairs"] - report["failures"])
    if warning:
        log.warning(f"[judge] {warning}; check it on labelled documents first (eztag check-judge)")
    figure, axes = plots.png_figure(6, 4)
    plots.draw_log_odds(axes, judgments["log_odds"].drop_nulls().to_numpy())
    plots.save_png(figure, out_dir / "log_odds.png")
    return report
