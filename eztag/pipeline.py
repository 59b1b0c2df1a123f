"""Pipelines: a TOML file naming stages and their settings, run into a run directory stage by stage."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from eztag import runstate
from eztag.artifacts import RunDir, config_hash
from eztag.config import apply_overrides, from_dict, load_toml, to_dict
from eztag.engines import Engine, EngineName, RayOptions, get_engine
from eztag.errors import EztagError, did_you_mean
from eztag.stages import STAGES, StageInputs
from eztag.stages.contract import provided_artifacts

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclasses.dataclass
class PipelineSection:
    """The `[pipeline]` table."""

    stages: list[str]
    """The stages to run, by name; they run in an order where each comes after the stages it reads, and every stage
    a listed one requires must be listed too."""
    name: str = "pipeline"
    """The pipeline's name: without `run_dir`, runs go to `runs/NAME` in the working directory."""
    run_dir: str | None = None
    """The run directory, relative to the pipeline file's folder; `None`: `runs/NAME` (`--run-dir` overrides both)."""
    engine: EngineName = "local"
    """Where encode, judge (and distil's re-judging) and tag run their work units: `local` (this process) or `ray` (a
    Ray Data actor pool, set up by `ray`; needs `eztag[ray]`)."""
    ray: RayOptions = dataclasses.field(default_factory=RayOptions)
    """`[pipeline.ray]`: the Ray cluster and actor pools, used with `engine = "ray"`."""


class Pipeline:
    """A validated pipeline: its stages in order and one config object per stage."""

    def __init__(
        self, path: Path, section: PipelineSection, configs: dict[str, Any], skipped: dict[str, str] | None = None
    ) -> None:
        self.path = path
        self.section = section
        self.configs = configs
        self.skipped = skipped or {}  # stage -> why it has nothing to do in this pipeline (decided at load)

    @classmethod
    def load(
        cls, path: str | Path, overrides: list[str] | None = None, *, data: dict[str, Any] | None = None
    ) -> Pipeline:
        """Read and validate a pipeline file (or the tables `data`, as if read from `path`); relative input paths
        are taken from the file's folder. An error that only the `overrides` (`--set SECTION.KEY=VALUE`) cause
        names them, not the file."""
        path = Path(path)
        data = load_toml(path) if data is None else data
        for name, value in data.items():
            if not isinstance(value, dict):
                raise EztagError(f"'{name}' must be a table ([{name}]), got {type(value).__name__}", file=path)
        if not overrides:
            return cls._validated(path, data)
        try:
            return cls._validated(path, apply_overrides(copy.deepcopy(data), overrides))
        except EztagError as error:
            if error.file != str(path):
                raise
            try:
                cls._validated(path, data)
            except EztagError:
                raise error from None  # the file is at fault without the overrides too
            raise EztagError(error.message, field=_blamed_overrides(error.field, overrides)) from None

    @classmethod
    def _validated(cls, path: Path, data: dict[str, Any]) -> Pipeline:
        data = dict(data)
        if "pipeline" not in data:
            raise EztagError("missing [pipeline] table with stages = [...]", file=path)
        section = from_dict(PipelineSection, data.pop("pipeline"), section="pipeline", file=path)
        for name in section.stages:
            if name not in STAGES:
                raise EztagError(
                    f"unknown stage '{name}'{did_you_mean(name, STAGES)}", file=path, field="pipeline.stages"
                )
        for name in data:
            if name not in STAGES:
                raise EztagError(f"unknown table [{name}]{did_you_mean(name, STAGES)}", file=path)
            if name not in section.stages:
                log.warning(f"{path}: table [{name}] is ignored: '{name}' is not in pipeline.stages")
        configs = {}
        for name in execution_order(section.stages):
            for required in STAGES[name].REQUIRES:
                if required not in section.stages:
                    raise EztagError(f"stage '{name}' needs stage '{required}'", file=path, field="pipeline.stages")
            for other, why in STAGES[name].CONFLICTS.items():
                if other in section.stages:
                    raise EztagError(
                        f"stages '{name}' and '{other}' cannot share a pipeline: {why}",
                        file=path,
                        field="pipeline.stages",
                    )
            table = _resolve_paths(data.get(name, {}), STAGES[name].PATH_FIELDS, path.parent)
            configs[name] = from_dict(STAGES[name].Config, table, section=name, file=path)
        skipped: dict[str, str] = {}
        for name, config in configs.items():
            reason: str | None
            try:
                reason = STAGES[name].check_pipeline(config, configs)
            except EztagError as error:
                raise EztagError(error.message, file=path, field=error.field) from None
            reason = reason or next(
                (f"it reads '{up}', skipped" for up in inputs_of(name, configs) if up in skipped), None
            )
            if reason:
                skipped[name] = reason
        return cls(path, section, configs, skipped)

    @property
    def stages(self) -> list[str]:
        """Stage names in execution order."""
        return list(self.configs)

    def default_run_dir(self) -> Path:
        """`[pipeline] run_dir` (relative to the pipeline file's folder, like every path in it) or runs/<name>."""
        if self.section.run_dir:
            return (self.path.parent / self.section.run_dir).resolve()
        return Path(f"runs/{self.section.name}")

    def stage_hash(self, stage: str) -> str:
        """Hash of the stage's config, input fingerprint and upstream hashes: equal hash, equal outputs."""
        module, config = STAGES[stage], self.configs[stage]
        fingerprint = module.fingerprint(config)
        upstream = {name: self.stage_hash(name) for name in self.inputs(stage)}
        return config_hash([FORMAT_VERSION, stage, to_dict(config), fingerprint, upstream])

    def run(self, run_dir: Path, *, until: str | None = None, force: list[str] | None = None) -> dict[str, Any]:
        """Run stages (up to `until` and its upstream), skipping those already finished with the same hash; a
        forced stage recomputes from scratch (no resumed partial work) with every stage downstream of it."""
        force = force or []
        for name in force + ([until] if until else []):
            if name not in self.configs:
                raise EztagError(f"stage '{name}' is not in this pipeline{did_you_mean(name, self.configs)}")
        wanted = self._upstream(until) if until else set(self.stages)
        forced = self.downstream(force)
        runs = RunDir(run_dir)
        engine: Engine | None = None
        summaries = {}
        for stage in self.stages:
            if stage not in wanted:
                continue
            runstate.check_stop()
            if stage in self.skipped:
                log.info(f"[{stage}] skipped: {self.skipped[stage]}")
                continue
            stage_hash = self.stage_hash(stage)
            if stage not in forced and runs.is_finished(stage, stage_hash):
                log.info(f"[{stage}] up to date, skipped")
                continue
            module = STAGES[stage]
            runstate.enter(stage)
            out_dir = runs.begin(stage, stage_hash, fresh=stage in forced)
            log.info(f"[{stage}] running")
            started = time.perf_counter()
            engine = engine or get_engine(self.section.engine, self.section.ray)
            read = self.inputs(stage)
            upstream = [(runs.stage_dir(name), STAGES[name].PROVIDES) for name in self.stages if name in read]
            dirs = {name: runs.stage_dir(name) for name in read}
            inputs = StageInputs(dirs, self.configs, engine, provided_artifacts(upstream))
            summaries[stage] = module.run(self.configs[stage], out_dir, inputs)
            seconds = time.perf_counter() - started
            runs.finish(stage, stage_hash, to_dict(self.configs[stage]), seconds)
            log.info(f"[{stage}] done in {seconds:.1f} s: {_short(summaries[stage])}")
        runstate.check_stop()
        return summaries

    def inputs(self, stage: str) -> list[str]:
        """The stages `stage` reads: those it requires and its optional ones (OPTIONAL) in this pipeline."""
        return inputs_of(stage, self.configs)

    def _upstream(self, stage: str) -> set[str]:
        needed = {stage}
        for name in self.inputs(stage):
            needed |= self._upstream(name)
        return needed

    def downstream(self, stages: list[str]) -> set[str]:
        """`stages` and every stage of this pipeline that reads one of them, directly or through others."""
        found = set(stages)
        for name in self.stages:  # execution order: a stage comes after everything it reads
            if found.intersection(self.inputs(name)):
                found.add(name)
        return found


def _blamed_overrides(field: str | None, overrides: list[str]) -> str:
    """`--set KEYS` for the overrides of the section (or key) `field` names; all of them if none matches."""
    keys = [item.partition("=")[0].strip() for item in overrides]
    section = (field or "").strip("[]").partition(".")[0]
    named = [key for key in keys if key == field] or [key for key in keys if key.partition(".")[0] == section]
    return "--set " + ", --set ".join(named or keys)


def inputs_of(stage: str, present: Iterable[str]) -> list[str]:
    """The stages `stage` reads in a pipeline of the stages `present`: its REQUIRES and its OPTIONAL ones there."""
    present = set(present)
    return [*STAGES[stage].REQUIRES, *(name for name in STAGES[stage].OPTIONAL if name in present)]


def execution_order(stages: list[str]) -> list[str]:
    """The stages in an order where each comes after the stages it reads; otherwise in the order given."""
    done: list[str] = []
    waiting = list(stages)
    while waiting:
        ready = next(
            (name for name in waiting if all(dep in done or dep not in stages for dep in inputs_of(name, stages))),
            None,
        )
        if ready is None:
            raise EztagError(f"stages {', '.join(waiting)} depend on each other in a cycle", field="pipeline.stages")
        done.append(ready)
        waiting.remove(ready)
    return done


def _resolve_paths(table: dict[str, Any], fields: tuple[str, ...], base: Path) -> dict[str, Any]:
    """Make relative paths absolute against `base`; a `model` that is no local path (a hub id) is kept."""
    table = dict(table)
    for field in fields:
        value = table.get(field)
        if not isinstance(value, str) or Path(value).is_absolute():
            continue
        candidate = (base / value).resolve()
        if field != "model" or candidate.exists():
            table[field] = str(candidate)
    return table


def _short(summary: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in summary.items() if isinstance(value, (int, float, str)))
