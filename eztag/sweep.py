"""Sweeps: one pipeline run under named variants (each a list of `--set` overrides), compared with the first.

A sweep file has a `[sweep]` table (the pipeline, the folder of the variants' run directories, the folder of the
comparison) and one `[variants.NAME]` table per variant, in order; the first is the baseline of `eztag compare`. A
variant's run directory is RUN_DIR/NAME. A stage whose config hash (its settings and everything upstream) equals
one already finished in another variant's run directory is taken from there, hard-linked, not run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from pathlib import Path

from eztag.artifacts import RunDir
from eztag.comparison import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES
from eztag.config import from_dict, load_toml
from eztag.errors import EztagError
from eztag.pipeline import Pipeline
from eztag.runlock import run_lock

log = logging.getLogger(__name__)

VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclasses.dataclass
class SweepSection:
    """The `[sweep]` table; paths are relative to the sweep file's folder."""

    pipeline: str
    """The pipeline file every variant runs."""
    run_dir: str
    """The folder of the variants' run directories: RUN_DIR/NAME."""
    out: str
    """The folder of comparison.md, comparison.html and recall_at_k.png: every variant against the first."""
    set: list[str] = dataclasses.field(default_factory=list)
    """Overrides every variant starts from, before `eztag sweep --set` and its own."""
    resamples: int = DEFAULT_RESAMPLES
    """Bootstrap resamples of the comparison's intervals."""
    confidence: float = DEFAULT_CONFIDENCE
    """Confidence level of the comparison's intervals."""

    def __post_init__(self) -> None:
        if self.resamples < 1 or not 0 < self.confidence < 1:
            raise ValueError("need resamples >= 1 and 0 < confidence < 1")


@dataclasses.dataclass
class VariantSection:
    """A `[variants.NAME]` table."""

    set: list[str] = dataclasses.field(default_factory=list)
    """Overrides of the pipeline's settings, as `eztag run --set` takes them ("SECTION.KEY=VALUE", TOML values)."""


@dataclasses.dataclass
class Sweep:
    """A loaded sweep: where it writes, and each variant's validated pipeline, baseline first."""

    run_dir: Path
    out: Path
    resamples: int
    confidence: float
    variants: dict[str, Pipeline]


def load_sweep(path: Path, overrides: list[str]) -> Sweep:
    """Read a sweep file and validate every variant's pipeline (the sweep's `set`, then `overrides`, then the
    variant's own), so that a mistake in the last variant stops the sweep before the first runs."""
    data = load_toml(path)
    unknown = sorted(set(data) - {"sweep", "variants"})
    if unknown:
        raise EztagError(f"unknown table [{unknown[0]}]; a sweep has [sweep] and [variants.NAME]", file=path)
    section = from_dict(SweepSection, _table(data, "sweep", path), section="sweep", file=path)
    variants = _table(data, "variants", path)
    if len(variants) < 2:
        raise EztagError("a sweep needs at least two [variants.NAME] tables, the first the baseline", file=path)
    base = path.parent
    pipelines = {}
    for name, table in variants.items():
        field = f"variants.{name}"
        if not VARIANT_NAME.fullmatch(name):
            raise EztagError("a variant name is a folder name: letters, digits, '.', '_', '-'", file=path, field=field)
        if not isinstance(table, dict):
            raise EztagError(f"must be a table ([{field}])", file=path, field=field)
        variant = from_dict(VariantSection, table, section=field, file=path)
        try:
            pipelines[name] = Pipeline.load(base / section.pipeline, [*section.set, *overrides, *variant.set])
        except EztagError as error:
            raise EztagError(f"variant '{name}': {error.message}", file=error.file, field=error.field) from None
    return Sweep(base / section.run_dir, base / section.out, section.resamples, section.confidence, pipelines)


def _table(data: dict[str, object], name: str, path: Path) -> dict[str, object]:
    table = data.get(name)
    if not isinstance(table, dict):
        raise EztagError(f"missing [{name}] table", file=path)
    return table


def take_finished_stages(
    pipeline: Pipeline, run_dir: Path, others: list[Path], fresh: list[Path], recomputed: set[str]
) -> list[str]:
    """Take into `run_dir` each stage of `pipeline` not finished there with its config hash but finished with it in
    one of `others` (other variants' run directories); a stage in `recomputed` (forced, or downstream of a forced
    one) only from `fresh`, the run directories this sweep call has run. A run directory that another run holds is
    not read. Returns the stages taken."""
    target = RunDir(run_dir)
    taken = []
    for stage in pipeline.stages:
        stage_hash = pipeline.stage_hash(stage)
        if stage in pipeline.skipped or (stage not in recomputed and target.is_finished(stage, stage_hash)):
            continue
        for path in fresh if stage in recomputed else others:
            if path.is_dir() and _take(stage, stage_hash, path, target):
                taken.append(stage)
                break
    return taken


def _take(stage: str, stage_hash: str, path: Path, target: RunDir) -> bool:
    """Take `stage` from the run directory `path` if it finished there with `stage_hash` and no run holds it."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(run_lock(path))
        except EztagError:  # held by a run in progress: its stage may be rewritten under us
            log.info(f"[{stage}] not taken from {path}: another run holds it")
            return False
        source = RunDir(path)
        if not source.is_finished(stage, stage_hash):
            return False
        target.adopt(stage, source)
        return True
