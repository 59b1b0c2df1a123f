"""Sweeps: one pipeline run under named variants (each a list of `--set` overrides), compared with the first.

A sweep file has a `[sweep]` table (the pipeline, the folder of the variants' run directories, the folder of the
comparison), `[variants.NAME]` tables, one per variant, in order, and `[grid.AXIS]` tables of named options whose
every combination is a variant too (after the named ones); the first variant is the baseline of `eztag compare`. A
variant's run directory is RUN_DIR/NAME. A stage whose config hash (its settings and everything upstream) equals
one already finished in another variant's run directory is taken from there, hard-linked, not run again. With
`command = "check-judge"` each variant is `eztag check-judge` over the sweep's labelled documents instead of
`eztag run`, and the comparison is a table of the checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import re
from pathlib import Path
from typing import Any, Literal

from eztag import judge_check
from eztag.artifacts import RunDir
from eztag.comparison import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES
from eztag.config import coerce, from_dict, load_toml
from eztag.distillation.config import DistilConfig
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
    command: Literal["run", "check-judge"] = "run"
    """What each variant is: `eztag run`, or `eztag check-judge` over `labelled`."""
    labelled: str | None = None
    """check-judge: the labelled documents (eztag check-judge's LABELLED)."""
    ground_truth: str | None = None
    """check-judge: their labels in a separate file (--ground-truth)."""
    documents: int = 300
    """check-judge: labelled documents judged, a seeded sample (--documents)."""

    def __post_init__(self) -> None:
        if self.resamples < 1 or not 0 < self.confidence < 1:
            raise ValueError("need resamples >= 1 and 0 < confidence < 1")
        if (self.command == "check-judge") != (self.labelled is not None):
            raise ValueError('labelled = FILE goes with command = "check-judge", and that needs it')
        if self.documents < 1:
            raise ValueError("need documents >= 1")


@dataclasses.dataclass
class VariantSection:
    """A `[variants.NAME]` table."""

    set: list[str] = dataclasses.field(default_factory=list)
    """Overrides of the pipeline's settings, as `eztag run --set` takes them ("SECTION.KEY=VALUE", TOML values)."""


@dataclasses.dataclass
class Variant:
    """One variant's validated pipeline; for a check-judge sweep, the check's pipeline and the distil settings that
    order the teacher's candidates (None without a [distil] table)."""

    pipeline: Pipeline
    distil: DistilConfig | None = None


@dataclasses.dataclass
class Sweep:
    """A loaded sweep: what each variant runs, where it writes, and each variant, baseline first."""

    command: str
    run_dir: Path
    out: Path
    resamples: int
    confidence: float
    variants: dict[str, Variant]


def load_sweep(path: Path, overrides: list[str]) -> Sweep:
    """Read a sweep file and validate every variant's pipeline (the sweep's `set`, then `overrides`, then the
    variant's own), so that a mistake in the last variant stops the sweep before the first runs."""
    data = load_toml(path)
    unknown = sorted(set(data) - {"sweep", "variants", "grid"})
    if unknown:
        raise EztagError(f"unknown table [{unknown[0]}]; a sweep has [sweep], [variants.NAME], [grid.AXIS]", file=path)
    table = data.get("sweep")
    if not isinstance(table, dict):
        raise EztagError("missing [sweep] table", file=path)
    section = from_dict(SweepSection, table, section="sweep", file=path)
    variant_sets = _named_variants(data.get("variants", {}), path)
    for name, sets in _grid_variants(data.get("grid", {}), path).items():
        if name in variant_sets:
            raise EztagError(f"variant '{name}' is named twice", file=path, field=f"variants.{name}")
        variant_sets[name] = sets
    if len(variant_sets) < 2:
        raise EztagError(
            "a sweep needs at least two variants ([variants.NAME] or [grid.AXIS]), the first the baseline", file=path
        )
    variants = {}
    for name, sets in variant_sets.items():
        try:
            variants[name] = _variant(path.parent, section, [*section.set, *overrides, *sets])
        except EztagError as error:
            raise EztagError(f"variant '{name}': {error.message}", file=error.file, field=error.field) from None
    base = path.parent
    return Sweep(
        section.command, base / section.run_dir, base / section.out, section.resamples, section.confidence, variants
    )


def _variant(base: Path, section: SweepSection, overrides: list[str]) -> Variant:
    pipeline = base / section.pipeline
    if section.labelled is None:
        return Variant(Pipeline.load(pipeline, overrides))
    ground_truth = None if section.ground_truth is None else base / section.ground_truth
    return Variant(
        *judge_check.check_pipeline(pipeline, base / section.labelled, ground_truth, section.documents, overrides)
    )


def _named_variants(tables: Any, path: Path) -> dict[str, list[str]]:
    """The `set` of each [variants.NAME] table, in order."""
    if not isinstance(tables, dict):
        raise EztagError("must be tables [variants.NAME]", file=path, field="variants")
    variants = {}
    for name, table in tables.items():
        field = f"variants.{name}"
        _check_name(name, path, field)
        if not isinstance(table, dict):
            raise EztagError(f"must be a table ([{field}])", file=path, field=field)
        variants[name] = from_dict(VariantSection, table, section=field, file=path).set
    return variants


def _grid_variants(axes: Any, path: Path) -> dict[str, list[str]]:
    """Every combination of one option per [grid.AXIS] table (OPTION = [overrides]), named OPTION_OPTION_..., the
    first axis varying slowest."""
    if not isinstance(axes, dict):
        raise EztagError("must be tables [grid.AXIS]", file=path, field="grid")
    choices = []
    for axis, options in axes.items():
        if not isinstance(options, dict) or not options:
            raise EztagError("must be a table of OPTION = [overrides]", file=path, field=f"grid.{axis}")
        for option, sets in options.items():
            field = f"grid.{axis}.{option}"
            _check_name(option, path, field)
            if isinstance(sets, dict):  # `w0.25 = [...]` is the table w0 with the key 25
                raise EztagError('a name with a dot needs quotes ("w0.25" = [...])', file=path, field=field)
            try:
                coerce(sets, list[str], field)
            except EztagError as error:
                raise EztagError(error.message, file=path, field=field) from None
        choices.append(list(options.items()))
    if not choices:
        return {}
    return {
        "_".join(option for option, _ in combination): [item for _, sets in combination for item in sets]
        for combination in itertools.product(*choices)
    }


def _check_name(name: str, path: Path, field: str) -> None:
    if not VARIANT_NAME.fullmatch(name):
        raise EztagError("a variant name is a folder name: letters, digits, '.', '_', '-'", file=path, field=field)


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


def stage_seconds(run_dirs: dict[str, Path], stages: list[str]) -> str:
    """Markdown: each variant's stage seconds from its manifest (a stage taken from another variant shows the
    seconds it took there) and their sum."""
    lines = [
        "Stage seconds per variant (each run directory's manifest; a stage taken from another variant shows the "
        "seconds it took there).",
        "",
        "| variant | " + " | ".join(stages) + " | sum |",
        "|---|" + "---:|" * (len(stages) + 1),
    ]
    for name, run_dir in run_dirs.items():
        records = RunDir(run_dir).manifest()["stages"]
        seconds = [records[stage]["seconds"] if stage in records else None for stage in stages]
        cells = ["-" if value is None else f"{value:.1f}" for value in seconds]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(v for v in seconds if v is not None):.1f} |")
    return "\n".join(lines) + "\n"
