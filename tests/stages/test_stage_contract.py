"""Every stage module follows the stage contract (eztag.stages.contract), and the pipeline orders stages by what
they read, not by where they are listed."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from eztag.errors import EztagError
from eztag.pipeline import Pipeline, execution_order
from eztag.stages import STAGES, StageInputs
from eztag.stages.contract import Stage, provided_artifacts
from tests.conftest import pipeline_file

CONTRACT = {
    name: value
    for name, value in Stage.__annotations__.items()
    if not name.startswith("_")  # NAME, HELP, REQUIRES, OPTIONAL, CONFLICTS, PATH_FIELDS, Config
}


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_module_follows_the_contract(name: str) -> None:
    module = STAGES[name]
    missing = [
        attribute for attribute in (*CONTRACT, "run", "fingerprint", "check_pipeline") if not hasattr(module, attribute)
    ]
    assert not missing, f"{module.__name__} lacks {missing}"
    assert name == module.NAME and module.__name__ == f"eztag.stages.{name}"
    assert isinstance(module.HELP, str) and module.HELP and "\n" not in module.HELP
    for attribute in ("REQUIRES", "OPTIONAL", "PATH_FIELDS"):
        assert isinstance(getattr(module, attribute), tuple), attribute
    assert all(isinstance(reason, str) and reason for reason in module.CONFLICTS.values())
    assert all(isinstance(kind, str) and isinstance(place, str) for kind, place in module.PROVIDES.items())
    for other in (*module.REQUIRES, *module.OPTIONAL, *module.CONFLICTS):
        assert other in STAGES and other != name
    assert dataclasses.is_dataclass(module.Config)
    fields = {field.name for field in dataclasses.fields(module.Config)}
    assert set(module.PATH_FIELDS) <= fields
    run = inspect.signature(module.run)
    assert list(run.parameters) == ["config", "out_dir", "inputs"]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in run.parameters.values())
    assert run.parameters["inputs"].annotation in (StageInputs, "StageInputs")
    assert list(inspect.signature(module.fingerprint).parameters) == ["config"]
    assert list(inspect.signature(module.check_pipeline).parameters) == ["config", "configs"]


def test_stage_graph_has_no_cycle() -> None:
    order = execution_order(list(reversed(STAGES)))
    for name in STAGES:
        for upstream in (*STAGES[name].REQUIRES, *STAGES[name].OPTIONAL):
            assert order.index(upstream) < order.index(name)


def test_order_comes_from_dependencies_not_from_the_list(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    config = pipeline_file(tmp_path, *small_inputs, stages='"evaluate", "tag", "index", "encode", "ingest"')
    assert Pipeline.load(config).stages == ["ingest", "encode", "index", "tag", "evaluate"]
    assert execution_order(["ingest", "encode", "index", "mine", "judge", "distil", "tag"]).index("distil") < 6


def test_stage_inputs_hand_over_folders_and_configs(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    pipeline = Pipeline.load(pipeline_file(tmp_path, *small_inputs))
    inputs = StageInputs({"ingest": tmp_path / "ingest"}, pipeline.configs)
    assert inputs["ingest"] == tmp_path / "ingest" and list(inputs) == ["ingest"]
    assert inputs.get("distil") is None and "distil" not in inputs
    assert inputs.config("ingest") is pipeline.configs["ingest"]
    with pytest.raises(KeyError):
        inputs.config("encode")  # not an input of this stage


def test_a_stage_reads_the_last_upstream_artifact_of_each_kind(tmp_path: Path) -> None:
    zero_shot = [(tmp_path / name, STAGES[name].PROVIDES) for name in ("ingest", "encode", "index")]
    assert provided_artifacts(zero_shot) == {"encode": tmp_path / "encode", "index": tmp_path / "index"}
    distilled = provided_artifacts([*zero_shot, (tmp_path / "distil", STAGES["distil"].PROVIDES)])
    assert distilled["encode"] == tmp_path / "distil" / "encode" and distilled["index"] == tmp_path / "distil" / "index"
    assert distilled["encoder"] == tmp_path / "distil" / "model"
    calibrated = provided_artifacts([*zero_shot, (tmp_path / "calibrate", STAGES["calibrate"].PROVIDES)])
    assert calibrated["calibrator"] == tmp_path / "calibrate" / "calibrator.json" and "encoder" not in calibrated


def test_conflicting_stages_fail_at_load(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    stages = '"ingest", "encode", "synonyms", "index", "mine", "judge", "distil", "tag"'
    config = pipeline_file(tmp_path, *small_inputs, stages=stages)
    with pytest.raises(EztagError) as error:
        Pipeline.load(config)
    message = str(error.value)
    assert "'distil' and 'synonyms' cannot share a pipeline" in message and "\n" not in message
