"""`eztag check-judge`: the judge against the student on labelled documents, before any distilling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from eztag import judge_check
from eztag.artifacts import write_json, write_parquet
from eztag.judging import YES_RATE_BOUNDS, YES_RATE_MIN_PAIRS, yes_rate_warning
from tests.conftest import assert_one_line_error, eztag, run_cli, write_jsonl

TOPICS = [
    ("audio", "A media player for audio files, plays mp3 and ogg music"),
    ("video", "A video editor that cuts and joins movie clips"),
    ("devel", "A C compiler and linker for embedded systems programming"),
    ("game", "Chess game with a graphical board and a computer opponent"),
]


def cold_start(tmp_path: Path, model_dir: Path) -> tuple[Path, Path]:
    """(a cold-start pipeline over eight unlabelled documents with a tiny random judge, the same documents with
    their labels under other column names: key, body, tags)."""
    rows = [(f"d{i}", f"{text}, edition {i}", topic) for i, (topic, text) in enumerate(TOPICS * 2)]
    documents = write_jsonl(tmp_path / "docs.jsonl", [{"id": key, "text": text} for key, text, _ in rows])
    labelled = write_jsonl(
        tmp_path / "labelled.jsonl", [{"key": key, "body": text, "tags": [topic]} for key, text, topic in rows]
    )
    labels = write_jsonl(
        tmp_path / "labels.jsonl",
        [{"id": topic, "text": f"{topic} software"} for topic in ("audio", "video", "devel", "game", "web", "mail")],
    )
    pipeline = tmp_path / "cold.toml"
    pipeline.write_text(
        '[pipeline]\nname = "cold"\nstages = ["ingest", "encode", "index", "mine", "judge", "distil"]\n'
        'run_dir = "runs/cold"\n'
        f'[ingest]\ndocuments = "{documents.name}"\nlabels = "{labels.name}"\n'
        "[mine]\nk = 3\n"
        f'[judge]\nmodel = "{model_dir}"\ndomain = "software package"\n[judge.options]\ndevice = "cpu"\n'
        '[distil]\nteacher = "combined"\nrounds = 1\n',
        encoding="utf-8",
    )
    return pipeline, labelled


def test_check_judge_reports_orders_and_fills_the_cold_start_cache(tmp_path: Path, tiny_llama_dir: Path) -> None:
    pipeline, labelled = cold_start(tmp_path, tiny_llama_dir)
    result = run_cli("check-judge", str(pipeline), str(labelled), "--resamples", "200", cwd=tmp_path)
    check_dir = tmp_path / "runs" / "cold-judge-check"
    report = json.loads((check_dir / "judge-check.json").read_text(encoding="utf-8"))
    assert report["documents"] == 8 and report["pairs"] == 24 and report["failures"] == 0
    orders = [row["order"] for row in report["orders"]]
    assert orders == ["student", "judge", "teacher (combined w=0.5)"]
    for row in report["orders"][1:]:
        for difference, low, high in row["vs_student"].values():
            assert low <= difference <= high
    assert report["verdict"] == judge_check.verdict(report["orders"][-1], report["confidence"])
    assert f"Verdict: {report['verdict']}." in result.stdout
    assert (check_dir / "judge-check.md").read_text(encoding="utf-8") in result.stdout
    # the labelled file's columns were found (key, body, tags) and every label taken from "tags"
    gold = pl.read_parquet(check_dir / "ingest" / "ground_truth.parquet")
    assert gold.height == 8 and set(gold["label_id"]) == {"audio", "video", "devel", "game"}

    # the cold start judges none of those pairs again: they sit in its own run directory's judge cache
    run_cli("judge", str(pipeline), cwd=tmp_path)
    judged = json.loads((tmp_path / "runs" / "cold" / "judge" / "report.json").read_text(encoding="utf-8"))
    assert judged["judged_now"] == 0 and judged["cache_hits"] == judged["unique_pairs"] == 24


def test_a_check_judge_sweep_is_each_check_and_names_the_best(tmp_path: Path, tiny_llama_dir: Path) -> None:
    pipeline, labelled = cold_start(tmp_path, tiny_llama_dir)
    sweep = tmp_path / "checks.toml"
    sweep.write_text(
        f'[sweep]\npipeline = "{pipeline.name}"\nrun_dir = "runs/checks"\nout = "checks"\ncommand = "check-judge"\n'
        f'labelled = "{labelled.name}"\ndocuments = 6\nresamples = 200\n'
        "[grid.k]\nk3 = []\nk2 = ['mine.k=2']\n"
        "[grid.teacher]\njudge = ['distil.teacher=\"log_odds\"']\n\"w0.25\" = ['distil.teacher_weight=0.25']\n",
        encoding="utf-8",
    )
    result = run_cli("sweep", str(sweep), cwd=tmp_path)
    runs = tmp_path / "runs" / "checks"
    rows = json.loads((tmp_path / "checks" / "checks.json").read_text(encoding="utf-8"))
    checks = {row.pop("variant"): row for row in rows}
    assert list(checks) == ["k3_judge", "k3_w0.25", "k2_judge", "k2_w0.25"]
    for name, check in checks.items():
        assert check == json.loads((runs / name / "judge-check.json").read_text(encoding="utf-8"))
        assert check["documents"] == 6 and check["pairs"] == 6 * int(name[1])
    assert [check["orders"][-1]["order"] for check in checks.values()] == ["judge", "teacher (combined w=0.25)"] * 2
    # the first variant judged its pairs; the top 2 of the same candidates were all in the judge cache
    assert checks["k3_judge"]["pairs_per_second"] > 0 and checks["k3_judge"]["judged_now"] == 18
    assert checks["k2_judge"]["pairs_per_second"] is None and checks["k2_judge"]["judged_now"] == 0
    # a teacher weight orders the same judgments: the check's stages are taken from the variant that ran them
    judged = runs / "k3_w0.25" / "judge" / "judgments.parquet"
    assert judged.stat().st_ino == (runs / "k3_judge" / "judge" / "judgments.parquet").stat().st_ino
    # each variant is `eztag check-judge` with its overrides
    alone = tmp_path / "alone"
    overrides = ["--set", "mine.k=2", "--set", "distil.teacher_weight=0.25", "--resamples", "200", "--documents", "6"]
    run_cli("check-judge", str(pipeline), str(labelled), "--run-dir", str(alone), *overrides, cwd=tmp_path)
    assert json.loads((alone / "judge-check.json").read_text(encoding="utf-8")) == checks["k2_w0.25"]
    best = max(checks, key=lambda name: checks[name]["orders"][-1]["vs_student"]["nDCG@5"][0])
    summary = (tmp_path / "checks" / "checks.md").read_text(encoding="utf-8")
    assert f"Largest nDCG@5 gain over the student: `{best}`" in summary and summary in result.stdout
    assert summary.count("\n| k") == 4


def test_check_judge_bad_inputs_are_one_line_errors(tmp_path: Path, tiny_llama_dir: Path) -> None:
    pipeline, labelled = cold_start(tmp_path, tiny_llama_dir)
    unlabelled = tmp_path / "docs.jsonl"
    assert_one_line_error(eztag("check-judge", str(pipeline), str(unlabelled)), "no labels column", "docs.jsonl")
    no_judge = tmp_path / "plain.toml"
    no_judge.write_text(pipeline.read_text(encoding="utf-8").split("[judge]")[0], encoding="utf-8")
    no_judge.write_text(no_judge.read_text(encoding="utf-8").replace(', "judge", "distil"', ""), encoding="utf-8")
    assert_one_line_error(eztag("check-judge", str(no_judge), str(labelled)), "no judge", "plain.toml")
    assert not (tmp_path / "runs").exists()


def write_run(run_dir: Path, rows: list[tuple[str, str, float, float, bool]]) -> None:
    """A finished check's judgments and ground truth from (doc_id, label_id, student_score, log_odds, gold) rows."""
    frame = pl.DataFrame(rows, schema=["doc_id", "label_id", "student_score", "log_odds", "gold"], orient="row")
    ranked = frame.with_columns(
        student_rank=pl.col("student_score").rank("ordinal", descending=True).over("doc_id").cast(pl.Int32),
        failure=pl.lit(None, dtype=pl.String),
    )
    write_parquet(run_dir / "judge" / "judgments.parquet", ranked.drop("gold"))
    write_parquet(run_dir / "ingest" / "ground_truth.parquet", frame.filter("gold").select("doc_id", "label_id"))
    write_json(run_dir / "judge" / "report.json", {"judged_now": 0, "pairs_per_second": None})  # all from a cache


def test_a_judge_that_finds_what_the_student_misses_is_worth_distilling(tmp_path: Path) -> None:
    # 40 documents: the student ranks the one gold label last of 4, the judge first (and says yes only to it)
    rows = [(f"d{d}", f"l{i}", 1.0 - i / 10, 2.0 if i == 3 else -2.0, i == 3) for d in range(40) for i in range(4)]
    write_run(tmp_path, rows)
    result = judge_check.check(tmp_path, None, resamples=500, confidence=0.95)
    student, judge = result["orders"]
    assert (student["P@1"], judge["P@1"], judge["nDCG@5"]) == (0.0, 1.0, 1.0)
    assert result["yes_rate"] == 0.25 and (result["yes_rate_gold"], result["yes_rate_other"]) == (1.0, 0.0)
    # P(yes) = sigmoid(2) for every gold pair, sigmoid(-2) for the rest: ECE by hand; the judge ranks gold first
    # (AUC 1), the student last (AUC 0)
    yes = 1 / (1 + np.exp(-2.0))
    assert result["judge_ece"] == pytest.approx(0.25 * (1 - yes) + 0.75 * (1 - yes), abs=1e-4)
    assert (result["auc_judge"], result["auc_student"]) == (1.0, 0.0)
    assert result["verdict"].endswith("distilling should help")
    flipped = [(doc, label, -student_score, -log_odds, gold) for doc, label, student_score, log_odds, gold in rows]
    write_run(tmp_path, flipped)
    assert "do not distil" in judge_check.check(tmp_path, None, resamples=500, confidence=0.95)["verdict"]


@pytest.mark.parametrize(
    ("interval", "says"),
    [((0.05, 0.01, 0.09), "should help"), ((-0.05, -0.09, -0.01), "do not distil"), ((0.01, -0.02, 0.04), "no clear")],
)
def test_verdict_follows_the_interval(interval: tuple[float, float, float], says: str) -> None:
    row = {"order": "judge", "vs_student": {"nDCG@5": list(interval)}}
    assert says in judge_check.verdict(row, 0.95)


def test_yes_rate_warning_only_at_the_extremes_of_enough_pairs() -> None:
    low, high = YES_RATE_BOUNDS
    enough = YES_RATE_MIN_PAIRS
    assert yes_rate_warning(high, enough) and yes_rate_warning(low, enough) and yes_rate_warning(1.0, enough)
    assert yes_rate_warning((low + high) / 2, enough) is None
    assert yes_rate_warning(1.0, enough - 1) is None and yes_rate_warning(None, enough) is None
