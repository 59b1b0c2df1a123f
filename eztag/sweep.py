"""Sweeps: one pipeline run under named variants (each a list of `--set` overrides), compared with the first.

A sweep file has a `[sweep]` table (the pipeline, the folder of the variants' run directories, the folder of the
comparison), `[variants.NAME]` tables, one per variant, in order, and `[grid.AXIS]` tables of named options whose
every combination is a variant too (after the named ones); the first variant is the baseline of `eztag compare`. A
variant's run directory is RUN_DIR/NAME. A stage whose config hash (its settings and everything upstream) equals
one already finished in another variant's run directory is taken from there, hard-linked, not run again. With
`command = "check-judge"` each variant is `eztag check-judge` over the sweep's labelled documents instead of
`eztag run`, and the comparison is a table of the checks.

Choices chain: with `choose = METRIC` a sweep writes OUT/scores.json, each variant's METRIC (evaluate's metrics.json)
and its setting (the overrides it adds to the sweep's own `set`); `best_of = "…/scores.json"` in [sweep], in a
[variants.NAME] table or in a grid option's table starts from the setting of the best variant there (`among` = a
name pattern narrows the choice), so a setting chosen on one split is run on another, or refined by the next sweep.
`share = false` runs every stage in every variant (timing sweeps).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import itertools
import json
import logging
import re
from pathlib import Path
from typing import Any, Literal

from eztag import judge_check
from eztag.artifacts import RunDir, write_json
from eztag.comparison import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, EVALUATE_DIR, TABLE_METRICS
from eztag.config import coerce, from_dict, load_toml
from eztag.distillation.config import DistilConfig
from eztag.errors import EztagError
from eztag.metrics import SET_METRICS
from eztag.pipeline import Pipeline
from eztag.runlock import run_lock

log = logging.getLogger(__name__)

VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SCORES = "scores.json"


@dataclasses.dataclass(kw_only=True)
class BestOf:
    """Start from the setting of the best variant in another sweep's scores.json."""

    best_of: str | None = None
    """That sweep's OUT/scores.json (relative to this sweep file's folder); it needs `choose`."""
    among: str = "*"
    """Only variants whose names match this pattern (`fnmatch`: `max_*`, `*_eps0.3`) compete."""


@dataclasses.dataclass
class SweepSection(BestOf):
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
    share: bool = True
    """Take a stage finished with the same config hash in another variant instead of running it; `false` for timing
    sweeps, whose variants differ in what the hash leaves out (the engine): each variant runs every stage itself."""
    choose: str | None = None
    """A metric of evaluate's metrics.json (`nDCG@5`, `example_F1`): write OUT/scores.json, each variant's value and
    setting, for `best_of` in later sweeps (ties: the first variant)."""

    def __post_init__(self) -> None:
        if self.resamples < 1 or not 0 < self.confidence < 1:
            raise ValueError("need resamples >= 1 and 0 < confidence < 1")
        if (self.command == "check-judge") != (self.labelled is not None):
            raise ValueError('labelled = FILE goes with command = "check-judge", and that needs it')
        if self.documents < 1:
            raise ValueError("need documents >= 1")
        if self.choose is not None and self.command != "run":
            raise ValueError('choose needs command = "run" (the variants\' evaluate metrics)')


@dataclasses.dataclass
class VariantSection(BestOf):
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
    settings: dict[str, list[str]]
    """Each variant's overrides after the sweep's own `set`: its best_of settings, then its `set`."""
    choose: str | None = None
    share: bool = True


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
    start = best_setting(path, section, "sweep")
    variant_sets = {name: [*start, *sets] for name, sets in _named_variants(data.get("variants", {}), path).items()}
    for name, sets in _grid_variants(data.get("grid", {}), path).items():
        if name in variant_sets:
            raise EztagError(f"variant '{name}' is named twice", file=path, field=f"variants.{name}")
        variant_sets[name] = [*start, *sets]
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
        if section.choose is not None:
            _check_choose(section.choose, name, variants[name].pipeline, path)
    base = path.parent
    return Sweep(
        section.command,
        base / section.run_dir,
        base / section.out,
        section.resamples,
        section.confidence,
        variants,
        variant_sets,
        section.choose,
        section.share,
    )


def _check_choose(metric: str, name: str, pipeline: Pipeline, path: Path) -> None:
    """Fail unless the variant `name`'s evaluate stage writes `metric` (METRIC@k with k in its ks, or a set metric)."""
    if "evaluate" not in pipeline.stages:
        raise EztagError(f"variant '{name}': choose needs the evaluate stage", file=path, field="sweep.choose")
    ks = pipeline.configs["evaluate"].ks
    measure, at, k = metric.partition("@")
    if not (measure in TABLE_METRICS and k.isdigit() and int(k) in ks if at else metric in SET_METRICS):
        raise EztagError(
            f"variant '{name}': evaluate writes no {metric!r}: METRIC@k ({', '.join(TABLE_METRICS)}; k in "
            f"evaluate.ks = {ks}) or {', '.join(SET_METRICS)}",
            file=path,
            field="sweep.choose",
        )


def best_setting(path: Path, table: BestOf, field: str) -> list[str]:
    """The setting of the best variant among `table.among` in the scores.json `table.best_of` names ([] without
    one); the sweep file `path` holds `table`, in its table `field`."""
    if table.best_of is None:
        if table.among != "*":
            raise EztagError("among needs best_of", file=path, field=f"{field}.among")
        return []
    scores_path = path.parent / table.best_of
    if not scores_path.is_file():
        raise EztagError("no such file: run the sweep that writes it (choose = METRIC) first", file=scores_path)
    scores = json.loads(scores_path.read_text())
    among = [row for row in scores["variants"] if fnmatch.fnmatchcase(row["name"], table.among)]
    if not among:
        raise EztagError(f"no variant there matches among = {table.among!r}", file=scores_path, field=f"{field}.among")
    return max(among, key=lambda row: row["value"])["set"]


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
        variants[name] = _variant_setting(table, path, field)
    return variants


def _variant_setting(table: dict[str, Any], path: Path, field: str) -> list[str]:
    """The overrides of a variant's table: the best_of setting, then its `set`."""
    section = from_dict(VariantSection, table, section=field, file=path)
    return [*best_setting(path, section, field), *section.set]


def _grid_variants(axes: Any, path: Path) -> dict[str, list[str]]:
    """Every combination of one option per [grid.AXIS] table (OPTION = [overrides], or a table like a variant's),
    named OPTION_OPTION_..., the first axis varying slowest."""
    if not isinstance(axes, dict):
        raise EztagError("must be tables [grid.AXIS]", file=path, field="grid")
    choices = []
    for axis, options in axes.items():
        if not isinstance(options, dict) or not options:
            raise EztagError("must be a table of OPTION = [overrides]", file=path, field=f"grid.{axis}")
        settings = {}
        for option, sets in options.items():
            field = f"grid.{axis}.{option}"
            _check_name(option, path, field)
            settings[option] = _setting(sets, path, field)
        choices.append(list(settings.items()))
    if not choices:
        return {}
    return {
        "_".join(option for option, _ in combination): [item for _, sets in combination for item in sets]
        for combination in itertools.product(*choices)
    }


def _setting(sets: Any, path: Path, field: str) -> list[str]:
    """A grid option's overrides: a list of them, or a table like a variant's (set, best_of, among)."""
    if isinstance(sets, dict):
        if not sets.keys() <= {known.name for known in dataclasses.fields(VariantSection)}:
            # `w0.25 = [...]` is the table w0 with the key 25
            raise EztagError('a name with a dot needs quotes ("w0.25" = [...])', file=path, field=field)
        return _variant_setting(sets, path, field)
    try:
        return coerce(sets, list[str], field)
    except EztagError as error:
        raise EztagError(error.message, file=path, field=field) from None


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


def write_scores(out: Path, metric: str, run_dirs: dict[str, Path], settings: dict[str, list[str]]) -> str:
    """Write OUT/scores.json: `metric` of each finished variant (its evaluate metrics.json) and its setting; returns
    a line naming the best (ties: the first)."""
    variants = []
    for name, run_dir in run_dirs.items():
        metrics_path = run_dir / EVALUATE_DIR / "metrics.json"
        data = json.loads(metrics_path.read_text())
        found = {**data["metrics"], **data.get("set_metrics", {})}
        if metric not in found:
            raise EztagError(f"no metric {metric!r}; it has {', '.join(sorted(found))}", file=metrics_path)
        variants.append({"name": name, "value": found[metric], "set": settings[name]})
    write_json(out / SCORES, {"metric": metric, "variants": variants})
    best = max(variants, key=lambda row: row["value"])
    return f"best {metric}: {best['name']} ({best['value']:.4f}); scores: {out / SCORES}"
