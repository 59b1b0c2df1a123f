"""The dependency floors in pyproject.toml are true: the lowest versions they allow install together and run.

uv (`--resolution lowest-direct`: each direct dependency at the lowest version its specifier allows, everything
else at the newest that fits) builds a virtual environment from pyproject.toml's `[project] dependencies`; then,
in that environment and from this checkout, the demo pipeline runs, `eztag report` renders its run, the unit tests
of the readers, metrics and artifacts pass, and one distil training run (datasets, accelerate and the
sentence-transformers trainer) passes. Each direct dependency must install at exactly its floor, so a floor that no
longer resolves (another dependency needs more) fails here too.

torch is the exception: a fresh torch is a download of several GB (a CUDA build from PyPI), so the environment
reuses this interpreter's torch (its files linked, its metadata copied) and pins it at its installed version;
the torch floor is not tested here (see pyproject.toml).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from uv import find_uv_bin

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
# The unit tests run in the lowest-versions environment: readers (every input format, skips, byte-order mark),
# metrics (ranking metrics, set metrics, calibration fits against scikit-learn), artifacts (atomic writes, modes).
SMOKE_TESTS = (
    "tests/stages/test_ingest_formats.py",
    "tests/test_bad_inputs.py::test_skip_mode_counts_every_problem",
    "tests/test_bad_inputs.py::test_skip_mode_labels_and_ground_truth",
    "tests/test_bad_inputs.py::test_byte_order_mark_is_accepted",
    "tests/test_metrics.py",
    "tests/stages/test_calibrate.py",
    "tests/test_safety.py::test_artifacts_get_the_mode_the_umask_allows",
)
# marked slow: run by name
DISTIL_TEST = "tests/stages/test_distil.py::test_training_lowers_loss_and_moves_toward_teacher"
REUSED = "torch"  # taken from this interpreter, never downloaded
REUSED_WITH_IT = re.compile(r"nvidia-.*|triton|cuda-.*")  # a CUDA torch's own libraries, linked along with it


def project_requirements() -> list[Requirement]:
    """`[project] dependencies` of pyproject.toml."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    return [Requirement(line) for line in project["dependencies"]]


def floor_of(requirement: Requirement) -> Version | None:
    """The version a `>=` (or `==`, `~=`) specifier names: the one lowest-direct installs; None without one."""
    floors = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "==", "~=")]
    return max(floors) if floors else None


def runner_requirement() -> str:
    """The pytest requirement of the `test` extra (lowest-direct installs its floor too)."""
    extras = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    lines: list[str] = extras["test"]
    return next(line for line in lines if Requirement(line).name == "pytest")


def run(
    command: Sequence[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; raise with the output's end when it fails."""
    words = [str(part) for part in command]
    result = subprocess.run(words, capture_output=True, text=True, cwd=cwd, env=env)
    if result.returncode != 0:
        output = f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        raise AssertionError(f"{' '.join(words)} exited {result.returncode}:\n{output}")
    return result


def link_distribution(name: str, site_packages: Path) -> str:
    """Make the installed distribution `name` importable from `site_packages` without copying it: its top-level
    files and folders are symlinked, its .dist-info folder copied (uv does not read a linked one) without RECORD,
    so that uv can never uninstall it through the links. Returns its version."""
    distribution = importlib.metadata.distribution(name)
    files = distribution.files
    if not files:
        raise AssertionError(f"{name} {distribution.version} lists no files (no RECORD): it cannot be linked")
    for top in sorted({Path(str(file)).parts[0] for file in files} - {".."}):  # ".." holds its bin/ scripts
        source, target = Path(str(distribution.locate_file(top))), site_packages / top
        if target.exists() or not source.exists():
            continue
        if top.endswith(".dist-info"):
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("RECORD"))
        else:
            target.symlink_to(source, target_is_directory=source.is_dir())
    return distribution.version


def reuse_torch(site_packages: Path) -> list[str]:
    """Link this interpreter's torch (and a CUDA build's nvidia-*/triton packages) into `site_packages`; returns
    the constraints `NAME==VERSION` that hold them there."""
    names = [REUSED]
    for line in importlib.metadata.requires(REUSED) or []:
        requirement = Requirement(line)
        if REUSED_WITH_IT.fullmatch(canonicalize_name(requirement.name)) and (
            requirement.marker is None or requirement.marker.evaluate({"extra": ""})
        ):
            names.append(requirement.name)
    return [f"{name}=={link_distribution(name, site_packages)}" for name in names]


def build_floor_env(root: Path) -> Path:
    """A virtual environment under `root` with pyproject's dependencies at their lowest allowed versions (uv
    lowest-direct), pytest at the test extra's floor, and this interpreter's torch; returns its python."""
    uv = find_uv_bin()  # the uv package of the test extra
    venv = root / "venv"
    run([uv, "venv", "--quiet", "--python", sys.executable, venv])
    python = venv / "bin" / "python"
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    constraints = root / "constraints.txt"
    constraints.write_text("\n".join(reuse_torch(Path(site))) + "\n", encoding="utf-8")
    lowest: list[str | Path] = ["--resolution", "lowest-direct", "--no-progress", "-c", constraints]
    run([uv, "pip", "install", "--python", python, *lowest, "-r", PYPROJECT, runner_requirement()])
    return python


def installed_versions(python: Path, names: Sequence[str]) -> dict[str, str]:
    """{name: version} of `names` as the environment of `python` has them ('missing' where absent)."""
    script = (
        "import importlib.metadata as m, sys\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n        print(name, m.version(name))\n"
        "    except m.PackageNotFoundError:\n        print(name, 'missing')\n"
    )
    lines = run([python, "-c", script, *names]).stdout.splitlines()
    return {name: version for name, version in (line.split(" ", 1) for line in lines)}


def smoke(python: Path, work: Path) -> dict[str, float]:
    """In the environment of `python`, from this checkout: the demo pipeline, `eztag report` on its run, the
    SMOKE_TESTS and DISTIL_TEST. Raises on the first failure; returns each step's wall time."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("VIRTUAL_ENV", None)
    run_dir, page = work / "demo", work / "report.html"
    # addopts cleared: the environment has no pytest-xdist, and the tests run in this one process
    pytest_command: list[str | Path] = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts="]
    steps: dict[str, list[str | Path]] = {
        "demo": [python, "-m", "eztag.cli", "run", REPO / "pipelines" / "demo.toml", "--run-dir", run_dir],
        "report": [python, "-m", "eztag.cli", "report", run_dir, "--out", page],
        "unit tests": [*pytest_command, "-m", "not slow", "--basetemp", work / "unit", *SMOKE_TESTS],
        "distil": [*pytest_command, "--basetemp", work / "distil", DISTIL_TEST],
    }
    seconds: dict[str, float] = {}
    for name, command in steps.items():
        start = time.monotonic()
        run(command, cwd=REPO, env=env)
        seconds[name] = round(time.monotonic() - start, 1)
    assert (run_dir / "evaluate" / "metrics.json").is_file()
    assert page.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    return seconds


@pytest.mark.slow
@pytest.mark.xdist_group("floors")
def test_lowest_allowed_versions_install_and_run(tmp_path: Path) -> None:
    requirements = project_requirements()
    start = time.monotonic()
    python = build_floor_env(tmp_path)
    install_seconds = round(time.monotonic() - start, 1)
    versions = installed_versions(python, [requirement.name for requirement in requirements])
    print(f"lowest-direct environment ({install_seconds} s to build):")
    for name, version in versions.items():
        print(f"    {name}=={version}")
    wrong = {
        requirement.name: f"installed {versions[requirement.name]}, floor {floor}"
        for requirement in requirements
        if requirement.name != REUSED
        and (floor := floor_of(requirement)) is not None
        and (versions[requirement.name] == "missing" or Version(versions[requirement.name]) != floor)
    }
    assert not wrong, f"not installed at its floor (a floor no longer resolves: raise it): {wrong}"
    unfloored = [requirement.name for requirement in requirements if floor_of(requirement) is None]
    assert not unfloored, f"direct dependencies without a floor: {unfloored}"
    print(f"smoke steps (seconds): {smoke(python, tmp_path)}")
