"""The reliability suite's tally, printed as one summary line at the end of the test session (see conftest)."""

from __future__ import annotations

from collections import Counter

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
