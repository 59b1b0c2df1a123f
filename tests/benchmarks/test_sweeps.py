"""The benchmark sweeps in benchmarks/pipelines load: their pipelines, variants and overrides are valid, each
variant's run directory is its own, and the variants differ from their baseline in the settings they name."""

from __future__ import annotations

from pathlib import Path

import pytest

from eztag.config import to_dict
from eztag.sweep import load_sweep
from tests.conftest import REPO

SWEEPS = sorted(path for path in (REPO / "benchmarks" / "pipelines").glob("*.toml") if "[sweep]" in path.read_text())
# inputs a script writes before the sweep runs, replaced by a shipped file of the same kind so the variants load
GENERATED = {"million-labels-indexes": ['ingest.labels="../../data/debtags/labels.jsonl"']}  # million_labels.py


def test_the_benchmark_sweeps_are_found() -> None:
    assert {path.stem for path in SWEEPS} >= {"debtags-indexes", "encoder-precision", "rounds-debtags"}


@pytest.mark.parametrize("path", SWEEPS, ids=[path.stem for path in SWEEPS])
def test_benchmark_sweep_loads(path: Path) -> None:
    sweep = load_sweep(path, GENERATED.get(path.stem, []))
    assert sweep.run_dir.resolve().is_relative_to(REPO / "runs")
    assert sweep.out.resolve().is_relative_to(REPO / "benchmarks" / "results")
    baseline, *others = sweep.variants.values()
    base = baseline.pipeline
    for variant in others:
        configs = variant.pipeline.configs
        differs = to_dict(variant.pipeline.section) != to_dict(base.section) or any(
            name not in base.configs or to_dict(configs[name]) != to_dict(base.configs[name]) for name in configs
        )
        assert differs or variant.distil != baseline.distil
