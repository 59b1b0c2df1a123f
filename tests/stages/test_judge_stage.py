"""The judge stage: cached shards survive a SIGKILL, a rerun judges only what is missing, results are unchanged."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import polars as pl
import pytest

from eztag.artifacts import read_shards
from eztag.errors import EztagError
from eztag.judges import JUDGES
from eztag.judging import SHARD_SCHEMA, JudgeConfig, build_judge, release_judge
from eztag.pipeline import Pipeline
from tests.conftest import cli_env, run_cli, write_jsonl

TOPICS = ("audio player", "video editor", "chess game", "C compiler", "web browser", "mail client", "text editor")


def judge_pipeline(tmp_path: Path, model_dir: Path, documents: int, k: int) -> Path:
    """`documents` package descriptions, 20 labels, mine k per document, judge with the model in `model_dir`."""
    docs = write_jsonl(
        tmp_path / "docs.jsonl",
        [
            {"id": f"p{i}", "text": f"A {TOPICS[i % 7]} number {i} " + "with many features " * (1 + i % 5)}
            for i in range(documents)
        ],
    )
    labels = write_jsonl(
        tmp_path / "labels.jsonl",
        [{"id": f"t{i}", "text": f"{TOPICS[i % 7]} tool {i}", "description": "Use"} for i in range(20)],
    )
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f'[pipeline]\nstages = ["ingest", "encode", "index", "mine", "judge"]\n'
        f'[ingest]\ndocuments = "{docs}"\nlabels = "{labels}"\n'
        f"[mine]\nk = {k}\n"
        f'[judge]\nmodel = "{model_dir}"\ndomain = "software package"\nshard_size = {k}\n'
        f'[judge.options]\ndevice = "cpu"\n',
        encoding="utf-8",
    )
    return path


def shard_keys(cache_dir: Path) -> list[str]:
    return read_shards(cache_dir, SHARD_SCHEMA)["key"].to_list()


@pytest.mark.slow
def test_kill_and_resume(tmp_path: Path, tiny_llama_dir: Path) -> None:
    path = judge_pipeline(tmp_path, tiny_llama_dir, documents=60, k=20)
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    Pipeline.load(path).run(killed, until="mine")
    shutil.copytree(killed, reference)
    cache = killed / "cache" / "judge"
    command = [sys.executable, "-m", "eztag.cli", "judge", str(path), "--run-dir", str(killed)]
    process = subprocess.Popen(command, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(cache.glob("part-*.parquet")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the judge finished before it could be killed"
    before = shard_keys(cache)
    assert 0 < len(before) < 60 * 20

    run_cli("judge", str(path), "--run-dir", str(killed))
    after = shard_keys(cache)
    assert len(after) == len(set(after)) == 60 * 20, "a pair was judged twice"
    report = pl.read_json(killed / "judge" / "report.json").row(0, named=True)
    assert (report["cache_hits"], report["judged_now"]) == (len(before), 60 * 20 - len(before))

    Pipeline.load(path).run(reference, until="judge")
    resumed = pl.read_parquet(killed / "judge" / "judgments.parquet")
    expected = pl.read_parquet(reference / "judge" / "judgments.parquet")
    assert resumed.select("doc_id", "label_id").equals(expected.select("doc_id", "label_id"))
    assert resumed["failure"].null_count() == resumed.height
    assert (resumed["score"] - expected["score"]).abs().max() < 1e-6
    assert (resumed["log_odds"] - expected["log_odds"]).abs().max() < 1e-5
    assert resumed["rank_in_doc"].equals(expected["rank_in_doc"])

    run_cli("judge", str(path), "--run-dir", str(killed), "--force", "judge")
    report = pl.read_json(killed / "judge" / "report.json").row(0, named=True)
    assert (report["cache_hits"], report["judged_now"]) == (60 * 20, 0)


def test_config_change_keeps_the_cache(tmp_path: Path, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new judge config empties the stage folder, but the run's judge cache still holds every paid judgment;
    a run with nothing left to judge never loads the model."""
    from transformers import AutoModelForCausalLM

    release_judge()  # build_judge keeps one judge per process: another test may have loaded this model
    loads = []
    load = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: loads.append(a) or load(*a, **k))
    path = judge_pipeline(tmp_path, tiny_llama_dir, documents=6, k=3)
    first = Pipeline.load(path).run(tmp_path / "run")["judge"]
    assert (first["judged_now"], first["cache_hits"], len(loads)) == (18, 0, 1)
    again = Pipeline.load(path, ["judge.shard_size=2"]).run(tmp_path / "run")["judge"]
    assert (again["judged_now"], again["cache_hits"], len(loads)) == (0, 18, 1)
    other_template = Pipeline.load(path, ["judge.template='graded'"]).run(tmp_path / "run")["judge"]
    assert other_template["judged_now"] == 18, "the template is part of the cache key"
    assert len(loads) == 2


def test_label_and_description_templates_shape_the_prompt(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """`label_template` and `description_template` decide what {label} and {description} show; an empty
    description drops the "Tag group" line, and a field that labels.parquet lacks is a one-line error."""
    from eztag import judging
    from eztag.prompts import PromptTemplate

    path = judge_pipeline(tmp_path, tiny_llama_dir, documents=2, k=2)
    run = tmp_path / "run"
    Pipeline.load(path).run(run, until="mine")
    candidates = pl.read_parquet(run / "mine" / "candidates.parquet")
    prompts = {}
    for name, overrides in {
        "plain": [],
        "with id": ["judge.label_template='{text} [[{label_id}]]'"],
        "no group": ["judge.description_template=''"],
    }.items():
        config = Pipeline.load(path, overrides).configs["judge"]
        pairs = judging.candidate_pairs(config, judging.build_judge(config), run / "ingest", candidates)
        prompts[name] = PromptTemplate.named(config.template, config.domain).messages(pairs[0])[-1]["content"]
    label = candidates["label_id"][0]
    assert "Tag group: Use\n" in prompts["plain"] and f"[{label}]" not in prompts["plain"]
    assert f"[{label}]" in prompts["with id"] and "Tag group: Use\n" in prompts["with id"]
    assert "Tag group" not in prompts["no group"]
    with pytest.raises(EztagError, match=r"judge.label_template.*unknown template field '\{tag\}'"):
        Pipeline.load(path, ["judge.label_template='{tag}'"])


def test_a_new_judge_is_built_after_the_kept_one_is_freed(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """build_judge keeps one judge; asked for another, it frees the kept one first, so that two engines of a large
    model never have to fit in memory together (a sweep over judges builds them one after another)."""
    release_judge()
    float32, bfloat16 = ({"device": "cpu", "precision": precision} for precision in ("float32", "bfloat16"))
    first = build_judge(JudgeConfig(model=str(tiny_llama_dir), options=float32))
    assert build_judge(JudgeConfig(model=str(tiny_llama_dir), options=float32)) is first
    kept = weakref.ref(first)
    del first
    freed_before_building = []
    construct = JUDGES.construct

    def spy(*args: object, **options: object) -> object:
        freed_before_building.append(kept() is None)
        return construct(*args, **options)

    monkeypatch.setattr(JUDGES, "construct", spy)
    build_judge(JudgeConfig(model=str(tiny_llama_dir), options=bfloat16))
    assert freed_before_building == [True]
    release_judge()
