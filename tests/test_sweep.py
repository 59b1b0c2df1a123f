"""`eztag sweep`: a pipeline under named variants, each the same as `eztag run --set` into its own folder, stages
shared between variants taken (hard-linked) instead of rerun, `--force` recomputed once, then `eztag compare`; a bad
sweep file fails with one line before any variant runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eztag.artifacts import RunDir, differing_outputs
from eztag.config import to_dict
from eztag.pipeline import Pipeline
from eztag.runlock import run_lock
from eztag.sweep import load_sweep, take_finished_stages
from tests.conftest import DEBTAGS, assert_one_line_error, eztag, run_cli, write_jsonl

pytestmark = pytest.mark.xdist_group("sweep")  # one worker: the module fixture runs the sweep once

TEMPLATE = 'encode.label_template="{text}[ ({description})]"'
SHARED = ["tag.k=10"]  # the sweep's own overrides, before each variant's
VARIANTS = {"base": [], "three-tags": ["tag.max_per_doc=3"], "described": [TEMPLATE]}
EVALUATED = ["--set", 'pipeline.stages=["ingest", "encode", "index", "tag", "evaluate"]']


def sweep_text(pipeline: Path, variants: dict[str, list[str]]) -> str:
    tables = "".join(f"[variants.{name}]\nset = {json.dumps(sets)}\n" for name, sets in variants.items())
    places = f'pipeline = "{pipeline}"\nrun_dir = "runs"\nout = "comparison"\nchoose = "nDCG@3"\n'
    return f"[sweep]\n{places}set = {json.dumps(SHARED)}\n{tables}"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished sweep (its file) of three variants over 40 debtags documents: the baseline, a tag setting (its
    ingest, encode and index taken from the baseline) and a label template (encode onwards its own)."""
    folder = tmp_path_factory.mktemp("sweep")
    rows = [json.loads(line) for line in (DEBTAGS / "sample.jsonl").open(encoding="utf-8")][:40]
    documents = write_jsonl(folder / "docs.jsonl", rows)
    pipeline = folder / "pipeline.toml"
    pipeline.write_text(
        '[pipeline]\nstages = ["ingest", "encode", "index", "tag", "evaluate"]\n'
        f'[ingest]\ndocuments = "{documents}"\nlabels = "{DEBTAGS / "labels.jsonl"}"\n'
        "[tag]\nk = 20\n[evaluate]\nks = [1, 3, 10]\n"
    )
    path = folder / "sweep.toml"
    path.write_text(sweep_text(pipeline, VARIANTS))
    run_cli("sweep", str(path), cwd=folder)
    return path


def inode(run_dir: Path, stage: str) -> int:
    return (run_dir / stage / ".config_hash").stat().st_ino


def test_each_variant_equals_its_own_run(sweep: Path) -> None:
    runs = sweep.parent / "runs"
    for name, sets in VARIANTS.items():
        alone = sweep.parent / "alone" / name
        overrides = [f"--set={item}" for item in SHARED + sets]
        run_cli("run", str(sweep.parent / "pipeline.toml"), "--run-dir", str(alone), *overrides)
        assert differing_outputs(runs / name, alone) == []
    metrics = [json.loads((runs / name / "evaluate" / "metrics.json").read_text()) for name in VARIANTS]
    assert metrics[0]["metrics"] != metrics[2]["metrics"]  # the variants really differ


def test_shared_stages_are_taken_not_rerun(sweep: Path) -> None:
    runs = sweep.parent / "runs"
    for stage in ("ingest", "encode", "index"):
        assert inode(runs / "three-tags", stage) == inode(runs / "base", stage)
    assert inode(runs / "described", "ingest") == inode(runs / "base", "ingest")
    assert inode(runs / "described", "encode") != inode(runs / "base", "encode")
    rerun = run_cli("sweep", str(sweep), cwd=sweep.parent)
    assert "running" not in rerun.stdout and rerun.stdout.count("up to date") == 15


def test_comparison_is_eztag_compare(sweep: Path) -> None:
    runs = sweep.parent / "runs"
    run_cli("compare", *(str(runs / name) for name in VARIANTS), "--out", str(sweep.parent / "by-hand"))
    by_sweep = (sweep.parent / "comparison" / "comparison.md").read_text()
    assert by_sweep == (sweep.parent / "by-hand" / "comparison.md").read_text()
    assert "| described | P |" in by_sweep and "| three-tags | P |" in by_sweep
    assert (sweep.parent / "comparison" / "comparison.html").stat().st_size > 0


def test_a_sweep_that_does_not_share_runs_every_stage_itself(sweep: Path) -> None:
    """share = false (timing sweeps): a second variant with the same settings (in a timing sweep, another engine)
    runs every stage itself (its own files, its own seconds) and writes what the first wrote."""
    path = sweep.parent / "unshared.toml"
    path.write_text(
        f'[sweep]\npipeline = "{sweep.parent / "pipeline.toml"}"\nrun_dir = "unshared"\nout = "unshared-out"\n'
        "share = false\n[variants.first]\n[variants.again]\n"
    )
    result = run_cli("sweep", str(path), cwd=sweep.parent)
    runs = sweep.parent / "unshared"
    assert "taken from" not in result.stdout and result.stdout.count("running") == 2 * 5
    for stage in ("ingest", "encode", "index", "tag", "evaluate"):
        assert inode(runs / "again", stage) != inode(runs / "first", stage)
    naming_the_folder = {"evaluate/metrics.md", "evaluate/recall_at_k.png"}  # the run's name in table and legend
    assert set(differing_outputs(runs / "again", runs / "first")) <= naming_the_folder


def test_scores_rank_each_variants_setting_and_a_later_sweep_starts_from_the_best(sweep: Path) -> None:
    """scores.json holds each variant's nDCG@3 (its metrics.json) and setting (without the sweep's own `set`); a
    sweep with best_of starts every variant from the best one's setting (ties: the first), a variant or a grid option
    with its own best_of adds that one's, `among` narrowing the choice."""
    metrics = {
        name: json.loads((sweep.parent / "runs" / name / "evaluate" / "metrics.json").read_text())["metrics"]["nDCG@3"]
        for name in VARIANTS
    }
    scores = json.loads((sweep.parent / "comparison" / "scores.json").read_text())
    assert scores == {
        "metric": "nDCG@3",
        "variants": [{"name": name, "value": metrics[name], "set": sets} for name, sets in VARIANTS.items()],
    }
    assert metrics["base"] == metrics["three-tags"]  # a selection rule leaves the ranking: a tie, the first wins
    best = max(VARIANTS, key=metrics.__getitem__)
    pipeline = sweep.parent / "pipeline.toml"
    chained = sweep.parent / "chained.toml"
    chained.write_text(
        f'[sweep]\npipeline = "{pipeline}"\nrun_dir = "r"\nout = "o"\nbest_of = "comparison/scores.json"\n'
        "[variants.best]\n[variants.best-two-tags]\nset = ['tag.max_per_doc=2']\n"
        "[grid.start]\nnarrowed = { best_of = 'comparison/scores.json', among = 'th*' }\nplain = []\n"
    )
    loaded = load_sweep(chained, ["tag.k=5"])
    assert loaded.settings == {
        "best": VARIANTS[best],
        "best-two-tags": [*VARIANTS[best], "tag.max_per_doc=2"],
        "narrowed": [*VARIANTS[best], *VARIANTS["three-tags"]],
        "plain": VARIANTS[best],
    }
    for name, variant in loaded.variants.items():
        alone = Pipeline.load(pipeline, ["tag.k=5", *loaded.settings[name]])
        assert {stage: to_dict(config) for stage, config in variant.pipeline.configs.items()} == {
            stage: to_dict(config) for stage, config in alone.configs.items()
        }


def test_stage_seconds_are_each_variants_manifest(sweep: Path) -> None:
    lines = (sweep.parent / "comparison" / "stages.md").read_text().splitlines()
    assert lines[2] == "| variant | ingest | encode | index | tag | evaluate | sum |"
    for name in VARIANTS:
        stages = RunDir(sweep.parent / "runs" / name).manifest()["stages"]
        seconds = [stages[stage]["seconds"] for stage in ("ingest", "encode", "index", "tag", "evaluate")]
        cells = " | ".join(f"{value:.1f}" for value in seconds)
        assert f"| {name} | {cells} | {sum(seconds):.1f} |" in lines


def test_force_recomputes_once_and_shares_it(sweep: Path) -> None:
    runs = sweep.parent / "runs"
    before = {name: inode(runs / name, "encode") for name in VARIANTS}
    finished_at = RunDir(runs / "base").manifest()["stages"]["encode"]["finished_at"]
    result = run_cli("sweep", str(sweep), "--force", "encode", cwd=sweep.parent)
    assert result.stdout.count("[encode] running") == 2  # the baseline's, then the described labels'
    after = {name: inode(runs / name, "encode") for name in VARIANTS}
    assert all(after[name] != before[name] for name in VARIANTS)
    assert after["three-tags"] == after["base"]
    assert RunDir(runs / "base").manifest()["stages"]["encode"]["finished_at"] >= finished_at
    for name in VARIANTS:
        assert differing_outputs(runs / name, sweep.parent / "alone" / name) == []


def test_a_run_directory_another_run_holds_is_not_read(sweep: Path, tmp_path: Path) -> None:
    base, pipeline = sweep.parent / "runs" / "base", load_sweep(sweep, []).variants["three-tags"].pipeline
    with run_lock(base):
        assert take_finished_stages(pipeline, tmp_path / "three-tags", [base], [], set()) == []
    assert take_finished_stages(pipeline, tmp_path / "three-tags", [base], [], set()) == ["ingest", "encode", "index"]


@pytest.mark.parametrize(
    ("name", "text", "args", "fragments"),
    [
        ("bad-set", "{pipeline_and_dirs}[variants.a]\n[variants.b]\nset = ['ingest.kk=3']\n", [], ["'b'", "kk"]),
        ("one-variant", "{pipeline_and_dirs}[variants.a]\n", [], ["sweep.toml", "at least two"]),
        ("bad-name", "{pipeline_and_dirs}[variants.a]\n[variants.'../b']\n", [], ["variants.../b", "folder name"]),
        ("no-sweep", "[variants.a]\n[variants.b]\n", [], ["sweep.toml", "missing [sweep]"]),
        ("force", "{pipeline_and_dirs}[variants.a]\n[variants.b]\n", ["--force", "mine"], ["--force", "'mine'"]),
        ("grid-option", "{pipeline_and_dirs}[grid.k]\n'a b' = []\nc = []\n", [], ["grid.k.a b", "folder name"]),
        ("grid-sets", "{pipeline_and_dirs}[grid.k]\na = []\nb = 'tag.k=3'\n", [], ["grid.k.b", "expected a list"]),
        ("grid-dot", "{pipeline_and_dirs}[grid.k]\nk0.5 = []\nb = []\n", [], ["grid.k.k0", "quotes"]),
        ("grid-twice", "{pipeline_and_dirs}[variants.a]\n[grid.k]\na = []\n", [], ["variants.a", "named twice"]),
        ("check-labels", "{pipeline_and_dirs}command = 'check-judge'\n[variants.a]\n[variants.b]\n", [], ["labelled"]),
        ("choose-no-evaluate", "{pipeline_and_dirs}choose = 'P@1'\n[variants.a]\n[variants.b]\n", [], ["evaluate"]),
        ("choose-k", "{pipeline_and_dirs}choose = 'P@7'\n[variants.a]\n[variants.b]\n", EVALUATED, ["'P@7'", "ks"]),
        ("choose-name", "{pipeline_and_dirs}choose = 'F1'\n[variants.a]\n[variants.b]\n", EVALUATED, ["'F1'"]),
        ("among-alone", "{pipeline_and_dirs}[variants.a]\namong = 'x*'\n[variants.b]\n", [], ["variants.a.among"]),
        ("no-scores", "{pipeline_and_dirs}best_of = 's.json'\n[variants.a]\n[variants.b]\n", [], ["s.json", "choose"]),
        (
            "none-among",
            "{pipeline_and_dirs}best_of = 'sc.json'\namong = 'z*'\n[variants.a]\n[variants.b]\n",
            [],
            ["sc.json", "sweep.among", "'z*'"],
        ),
        (
            "nested-set",
            "{pipeline_and_dirs}[variants.a]\n[variants.b]\nset = ['ingest.labels.x=1']\n",
            [],
            ["'ingest.labels' is not a table"],
        ),
    ],
)
def test_bad_sweep_fails_before_running(
    tmp_path: Path, name: str, text: str, args: list[str], fragments: list[str]
) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"id": "d1", "text": "a chess engine"}])
    write_jsonl(tmp_path / "l.jsonl", [{"id": "chess", "text": "chess"}])
    (tmp_path / "sc.json").write_text(json.dumps({"metric": "P@1", "variants": [{"name": "a", "value": 1, "set": []}]}))
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text('[pipeline]\nstages = ["ingest"]\n[ingest]\ndocuments = "d.jsonl"\nlabels = "l.jsonl"\n')
    path = tmp_path / "sweep.toml"
    path.write_text(text.format(pipeline_and_dirs=f'[sweep]\npipeline = "{pipeline}"\nrun_dir = "r"\nout = "o"\n'))
    assert_one_line_error(eztag("sweep", str(path), *args), *fragments)
    assert not (tmp_path / "r").exists()


def test_a_grid_is_every_combination_after_the_named_variants(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(
        '[pipeline]\nstages = ["ingest", "encode", "index", "tag"]\n'
        f'[ingest]\ndocuments = "{DEBTAGS / "sample.jsonl"}"\nlabels = "{DEBTAGS / "labels.jsonl"}"\n'
    )
    path = tmp_path / "sweep.toml"
    path.write_text(
        f'[sweep]\npipeline = "{pipeline}"\nrun_dir = "r"\nout = "o"\nset = ["tag.k=7"]\n[variants.base]\n'
        "[grid.k]\nk5 = ['tag.k=5']\nk9 = ['tag.k=9']\n"
        "[grid.limit]\nall = []\nthree = ['tag.max_per_doc=3', 'tag.min_per_doc=2']\n"
    )
    variants = load_sweep(path, []).variants
    assert list(variants) == ["base", "k5_all", "k5_three", "k9_all", "k9_three"]
    expected = {
        "base": [],
        "k5_all": ["tag.k=5"],
        "k5_three": ["tag.k=5", "tag.max_per_doc=3", "tag.min_per_doc=2"],
        "k9_all": ["tag.k=9"],
        "k9_three": ["tag.k=9", "tag.max_per_doc=3", "tag.min_per_doc=2"],
    }
    for name, sets in expected.items():
        alone = Pipeline.load(pipeline, ["tag.k=7", *sets])
        assert to_dict(variants[name].pipeline.configs["tag"]) == to_dict(alone.configs["tag"])
    assert variants["k9_three"].pipeline.configs["tag"].max_per_doc == 3
