"""The stage contract: what every stage module defines, and what the pipeline hands its `run`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from eztag.engines import Engine, LocalEngine


class StageInputs(Mapping[str, Path]):
    """The finished upstream stages a stage reads (its REQUIRES and the OPTIONAL ones in the pipeline).

    `inputs["encode"]` is the encode stage's folder, `"synonyms" in inputs` tells whether an optional stage is
    there, `inputs.get("distil")` is its folder or None, and `inputs.config("encode")` the config it ran with.
    `inputs.engine` runs the stage's work units (`[pipeline] engine`; this process by default).
    `inputs.artifacts["index"]` is the artifact of that kind the stage reads: the last upstream stage, in execution
    order, that PROVIDES it (distil's index when the pipeline distils, else the index stage's), chosen by the pipeline.
    """

    def __init__(
        self,
        dirs: Mapping[str, Path],
        configs: Mapping[str, Any],
        engine: Engine | None = None,
        artifacts: Mapping[str, Path] | None = None,
    ) -> None:
        self._dirs = dict(dirs)
        self._configs = {name: configs[name] for name in self._dirs}
        self.artifacts = dict(artifacts or {})
        self.engine = engine or LocalEngine()

    def __getitem__(self, stage: str) -> Path:
        return self._dirs[stage]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dirs)

    def __len__(self) -> int:
        return len(self._dirs)

    def config(self, stage: str) -> Any:
        """The config object the upstream stage `stage` ran with."""
        return self._configs[stage]


def provided_artifacts(upstream: Sequence[tuple[Path, Mapping[str, str]]]) -> dict[str, Path]:
    """kind -> path of the artifacts a stage reads, from its upstream stages' (folder, PROVIDES) in execution order:
    a later stage's artifact of a kind replaces an earlier one's (distil's encode/ replaces the encode stage's)."""
    return {kind: folder / place for folder, provides in upstream for kind, place in provides.items()}


def no_fingerprint(config: Any) -> None:
    """The `fingerprint` of a stage whose outputs depend on its config and upstream stages only."""
    return None


def no_pipeline_checks(config: Any, configs: Mapping[str, Any]) -> str | None:
    """The `check_pipeline` of a stage whose config is valid, and which has work, whatever else the pipeline holds."""
    return None


class Stage(Protocol):
    """A stage module (eztag/stages/NAME.py), listed once in `eztag.stages.STAGES`.

    NAME: the stage's name (its TOML table, CLI subcommand and run-directory folder). HELP: one line for the CLI.
    REQUIRES: stages that must be in the pipeline and run first. OPTIONAL: stages read when they are in the
    pipeline (then they run first too). CONFLICTS: stages that cannot share a pipeline with this one, with the
    reason. PROVIDES: the artifacts of this stage that downstream stages read by kind rather than by stage
    (`StageInputs.artifacts`), kind -> place in its folder: "encode" (embedding stores), "index", "encoder" (a
    model folder), "calibrator", "round_judgments"; a later stage's artifact replaces an earlier one's.
    PATH_FIELDS: Config fields holding paths, resolved against the pipeline file's folder. Config: the dataclass of
    the stage's table. `run` writes the stage's artifacts into `out_dir` and returns a JSON-able summary;
    `fingerprint` returns what, beyond the config, changes the outputs (input checksums, model files), or None;
    `check_pipeline` (given every stage's config by name) raises an EztagError (field named, no file: the pipeline
    adds it) when the config does not fit the other stages of the pipeline, or returns why the stage has nothing to
    do in this pipeline (it and what reads it are then skipped with that note), checked when the pipeline is loaded.
    """

    NAME: str
    HELP: str
    REQUIRES: tuple[str, ...]
    OPTIONAL: tuple[str, ...]
    CONFLICTS: Mapping[str, str]
    PROVIDES: Mapping[str, str]
    PATH_FIELDS: tuple[str, ...]
    Config: type

    def run(self, config: Any, out_dir: Path, inputs: StageInputs) -> dict[str, Any]: ...

    def fingerprint(self, config: Any) -> Any: ...

    def check_pipeline(self, config: Any, configs: Mapping[str, Any]) -> str | None: ...
