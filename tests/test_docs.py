"""The documentation: the README's quickstart runs as written, it stays a short door, and the docs site builds
with `--strict` with a configuration reference that lists every key of every config class."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from eztag.pipeline import PipelineSection
from eztag.stages import STAGES
from tests.conftest import REPO, cli_env

README = REPO / "README.md"


def _hooks():  # docs/hooks.py is MkDocs' hook file, not a package module
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config_keys() -> list[tuple[str, str]]:
    """(table, key) of every field of the pipeline's config classes, nested tables included."""
    keys = []

    def walk(cls: type, table: str) -> None:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            keys.append((table, field.name))
            for candidate in (hints[field.name], *typing.get_args(hints[field.name])):
                if dataclasses.is_dataclass(candidate):
                    walk(candidate, f"{table}.{field.name}")

    walk(PipelineSection, "pipeline")
    for name, module in STAGES.items():
        walk(module.Config, name)
    return keys


def _readme_session(heading: str) -> list[tuple[str, list[str]]]:
    """The `$ command` lines of the console blocks under `## heading`, each with the output lines shown after it."""
    section = README.read_text(encoding="utf-8").split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    session: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                session.append((line[2:].split("  #", 1)[0].strip(), []))
            elif session:
                session[-1][1].append(line)
    return session


@pytest.mark.slow
def test_readme_quickstart_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "docs.csv").write_text(
        "id,title,body\n"
        'n1,Stargazer,"A desktop planetarium that shows the night sky, stars and planets in 3D"\n'
        'n2,BeatBox,"Record, mix and edit music tracks with a multitrack audio editor"\n'
        'n3,PyLint Pro,"Static analysis for Python source code: finds bugs and style problems"\n',
        encoding="utf-8",
    )
    (tmp_path / "labels.csv").write_text(
        "id,label\nastronomy,Astronomy and space science\naudio,Audio and music editing\n"
        "devel,Software development tools\ngame,Games\nscience,Science\n",
        encoding="utf-8",
    )
    session = _readme_session("Tag your own data")
    assert [command.split()[:2] for command, _ in session] == [
        ["eztag", "tag"],
        ["head", "-3"],
        ["eztag", "init"],
        ["eztag", "run"],
    ]
    for command, shown in session:
        words = shlex.split(command)
        if words[0] == "eztag":
            words = [sys.executable, "-m", "eztag.cli", *words[1:]]
        result = subprocess.run(words, cwd=tmp_path, capture_output=True, text=True, env=cli_env())
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        printed = result.stdout.splitlines()
        for line in shown:
            if command.startswith("head"):  # the same rows; scores may differ in the last digits between CPUs
                assert any(row.split(",")[:4] == line.split(",")[:4] for row in printed), (line, printed)
            else:
                assert line in printed, (command, line, printed)
    assert (tmp_path / "runs" / "eztag" / "report.html").is_file()


def test_readme_is_a_short_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / link).is_file(), link


def test_configuration_reference_lists_every_key() -> None:
    reference = _hooks().configuration_reference()
    tables = dict(re.findall(r"## `\[([\w.]+)\]`\n(.*?)(?=\n## |\Z)", reference, re.S))
    for table, key in _config_keys():
        assert f"| `{key}` |" in tables[table], f"[{table}] {key} is missing from the configuration reference"


def test_configuration_reference_refuses_an_undocumented_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import griffe

    (tmp_path / "planted_config.py").write_text(
        "import dataclasses\n\n\n@dataclasses.dataclass\nclass Config:\n"
        '    """Planted."""\n\n    k: int = 1\n    """Documented."""\n    rule: str = "x"\n',
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    planted = importlib.import_module("planted_config")
    loader = griffe.GriffeLoader(search_paths=[str(tmp_path)])
    with pytest.raises(ValueError, match=r"planted_config\.Config\.rule has no docstring"):
        _hooks()._tables(planted.Config, "planted", loader)


def test_docs_site_builds_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(site)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=cli_env(),
    )
    assert result.returncode == 0, result.stderr
    pages = sorted(path.parent.name for path in site.rglob("index.html") if path.parent != site)
    nav = re.findall(r"^  - [^:]+: (\S+)\.md$", (REPO / "mkdocs.yml").read_text(encoding="utf-8"), re.M)
    assert sorted(name for name in nav if name != "index") == pages
    required = {"getting-started", "input-formats", "pipelines", "configuration", "judges", "gpu", "ray"}
    assert required | {"reliability", "benchmarks"} <= set(pages)  # the site's chapters a user looks for
    configuration = (site / "configuration" / "index.html").read_text(encoding="utf-8")
    for table, key in _config_keys():
        assert f"<code>{key}</code>" in configuration, f"[{table}] {key}"
