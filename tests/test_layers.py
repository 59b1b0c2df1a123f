"""The import layering in pyproject.toml ([tool.importlinter]), checked by import-linter's own CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the eztag package and pyproject.toml under `root`."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    script = Path(sysconfig.get_path("scripts")) / "lint-imports"  # import-linter's console script
    command = [sys.executable, str(script), "--no-cache"]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_package_keeps_its_import_contracts() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        ("stages/tag.py", "from eztag.stages import calibrate", "stages never import one another"),
        ("judging.py", "from eztag.stages import judge", "eztag is layered"),
        ("stages/mine.py", "from eztag import pipeline", "eztag is layered"),
    ],
)
def test_a_planted_import_breaks_a_contract(tmp_path: Path, module: str, planted: str, contract: str) -> None:
    shutil.copytree(REPO / "eztag", tmp_path / "eztag", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "eztag" / module, "a", encoding="utf-8") as handle:
        handle.write(f"\n{planted}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout
