"""The code checks CI relies on, run as part of the suite: ruff lint, ruff format and mypy over eztag/."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

CHECKS = {
    "ruff check": [sys.executable, "-m", "ruff", "check", "eztag", "tests", "benchmarks"],
    "ruff format": [sys.executable, "-m", "ruff", "format", "--check", "eztag", "tests", "benchmarks"],
    "mypy": [sys.executable, "-m", "mypy"],  # eztag/, configured in pyproject.toml
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_code_check_passes(name: str) -> None:
    result = subprocess.run(CHECKS[name], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
