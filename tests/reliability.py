"""The reliability suite's tally, printed as one summary line at the end of the test session (see conftest)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from eztag.artifacts import RunDir

TALLY: Counter[str] = Counter()
KILLS_BY_STAGE: Counter[str] = Counter()


def summary_line() -> str | None:
    """'reliability: …' when a reliability test ran in this session, else None."""
    if not TALLY and not KILLS_BY_STAGE:
        return None
    stages = ", ".join(f"{stage} {count}" for stage, count in KILLS_BY_STAGE.items())
    return (
        f"reliability: kill points survived {sum(KILLS_BY_STAGE.values())} ({stages}), "
        f"bad inputs tried {TALLY['bad_inputs']}, server faults injected {TALLY['server_faults']}, "
        f"lost {TALLY['lost']}, duplicated {TALLY['duplicated']}"
    )


def _without_timings(data: Any) -> Any:
    """JSON data without the wall-clock times (keys ending in "seconds") that differ from run to run."""
    if isinstance(data, dict):
        return {key: _without_timings(value) for key, value in data.items() if not key.endswith("seconds")}
    return data


def differing_outputs(run_dir: Path, reference: Path) -> list[str]:
    """Output files (stage/name, from the manifests' checksums) that differ between two finished runs; a JSON file
    that differs only in its timings counts as equal."""
    digests = [
        {
            f"{stage}/{name}": digest
            for stage, record in RunDir(root).manifest()["stages"].items()
            for name, digest in record["outputs"].items()
        }
        for root in (run_dir, reference)
    ]
    differ = []
    for name in sorted(digests[0].keys() | digests[1].keys()):
        if digests[0].get(name) == digests[1].get(name):
            continue
        if name.endswith(".json") and name in digests[0] and name in digests[1]:
            got, want = (_without_timings(json.loads((root / name).read_text())) for root in (run_dir, reference))
            if got == want:
                continue
        differ.append(name)
    return differ
