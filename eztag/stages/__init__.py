"""Pipeline stages: each reads its inputs from the run directory and writes its artifacts there.

`STAGES` is the one list of stages (the pipeline, the CLI and the docs read it); every module in it follows the
contract in `eztag.stages.contract`. To add a stage, write eztag/stages/NAME.py and add it here.
"""

from __future__ import annotations

from eztag.stages import calibrate, distil, encode, evaluate, index, ingest, judge, mine, synonyms, tag
from eztag.stages.contract import Stage, StageInputs

STAGES: dict[str, Stage] = {
    module.NAME: module for module in (ingest, encode, synonyms, index, mine, judge, distil, calibrate, tag, evaluate)
}

__all__ = ["STAGES", "Stage", "StageInputs"]
