"""The distil stage: a tiny real training run lowers the loss and moves the student toward the teacher, a
crashed run resumes from its checkpoint, and a whole pipeline tags with the distilled encoder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from eztag.distillation import data, selection, training
from eztag.distillation.config import DistilConfig
from eztag.models import resolve_encoder
from tests.conftest import run_cli, write_jsonl

DOCUMENTS = {
    "d1": "A media player for audio and video files",
    "d2": "Play music and podcasts, supports mp3 and ogg",
    "d3": "A C compiler and linker for embedded systems",
    "d4": "Debugger for programs written in C and C++",
    "d5": "Chess game with a graphical board",
    "d6": "Arcade game where you shoot asteroids",
}
LABELS = {"audio": "Audio and music", "video": "Video", "devel": "Software development", "game": "Games"}
CONFIG = DistilConfig(
    teacher="log_odds",
    list_size=4,
    batch_size=6,
    learning_rate=3e-4,
    warmup_ratio=0.0,
    batch_sampler="batch_sampler",
    device="cpu",
    save_steps=2,
)


def teacher_judgments() -> pl.DataFrame:
    """Every (document, label) pair with a teacher that ranks the labels in an order of its own."""
    rows = []
    for i, doc_id in enumerate(DOCUMENTS):
        for j, label_id in enumerate(LABELS):
            rows.append((doc_id, label_id, float((i + 2 * j) % 4), float(-j)))
    frame = pl.DataFrame(rows, schema=["doc_id", "label_id", "log_odds", "student_score"], orient="row")
    return frame.with_columns(failure=pl.lit(None, dtype=pl.String))


def agreement_of(model_dir: str, judgments: pl.DataFrame) -> float:
    """Mean Spearman correlation of the model's scores with the teacher's over each document's labels."""
    from eztag.encoders.sentence_transformers import SentenceTransformerEncoder

    encoder = SentenceTransformerEncoder(model_dir, device="cpu", precision="float32")
    documents, labels = encoder.encode(list(DOCUMENTS.values())), encoder.encode(list(LABELS.values()))
    reference = judgments.with_columns(
        label_row=pl.col("label_id").replace_strict({label: i for i, label in enumerate(LABELS)}, return_dtype=pl.Int64)
    )
    doc_row = {doc_id: i for i, doc_id in enumerate(DOCUMENTS)}
    return selection.agreement(reference, doc_row, documents, labels)["spearman"]


def train(round_dir: Path, **changes: object) -> dict:
    config = dataclasses.replace(CONFIG, **changes)
    teacher = data.teacher_scores(teacher_judgments(), config)
    columns, skipped = data.training_rows(teacher, DOCUMENTS, LABELS, config)
    assert len(columns["anchor"]) == 6 and not skipped
    return training.train(resolve_encoder("default"), columns, config, round_dir)


def test_training_rows_positives_and_skips() -> None:
    teacher = data.teacher_scores(teacher_judgments(), dataclasses.replace(CONFIG, teacher="combined"))
    assert teacher.group_by("doc_id").agg(pl.col("teacher").mean().abs().max())["teacher"].max() < 1e-9
    config = dataclasses.replace(CONFIG, positives="threshold", threshold=2.5, list_size=3)
    teacher = data.teacher_scores(teacher_judgments(), config)
    columns, skipped = data.training_rows(teacher, DOCUMENTS, LABELS, config)
    assert len(columns["anchor"]) == 6 and skipped == {"no_positive": 3}  # odd documents: two labels score 3
    assert all(scores[0] >= 2.5 > max(scores[1:]) for scores in columns["label"])
    one = dataclasses.replace(config, max_positives=1)
    assert len(data.training_rows(teacher, DOCUMENTS, LABELS, one)[0]["anchor"]) == 3


def test_label_free_verdict_reads_log_odds_not_a_graded_score() -> None:
    """A graded judge's score is the expected grade / 3: 0.6 with P(grade >= 2) = 0.4 is not a "yes"."""
    rows = [  # doc_id, label_id, score, log_odds, student_rank
        ("h1", "a", 0.6, -0.4, 1),  # graded: high expected grade, yet most mass on grades 0-1
        ("h1", "b", 0.2, -2.0, 2),
        ("h2", "a", 0.7, 0.8, 1),  # yes on both readings
        ("h2", "b", 0.55, 0.2, 2),
    ]
    judgments = pl.DataFrame(rows, schema=["doc_id", "label_id", "score", "log_odds", "student_rank"], orient="row")
    scores = selection.label_free_scores(judgments, {"h1", "h2"}, 0.5)
    assert scores["llm_p@1"] == 0.5 and scores["llm_p@5"] == pytest.approx(0.2)  # 1 of 2 tops, 2 of 10 slots
    strict = selection.label_free_scores(judgments, {"h1", "h2"}, 0.6)  # log-odds >= log(1.5) = 0.405
    assert strict["llm_p@1"] == 0.5 and strict["llm_p@5"] == pytest.approx(0.1)


@pytest.mark.slow
def test_training_lowers_loss_and_moves_toward_teacher(tmp_path: Path) -> None:
    judgments = teacher_judgments()
    before = agreement_of("default", judgments)
    report = train(tmp_path / "kl", epochs=6, contrastive_weight=0.1)
    assert report["steps"] == 6
    assert np.mean(report["losses"][-2:]) < np.mean(report["losses"][:2])
    after = agreement_of(str(tmp_path / "kl" / "model"), judgments)
    assert after > before + 0.2, (before, after)


@pytest.mark.slow
def test_crashed_training_resumes_from_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import Trainer

    reference = train(tmp_path / "reference", max_steps=4)
    original, calls = Trainer.training_step, []

    def crash_after_three(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "crashed", max_steps=4)
    assert (tmp_path / "crashed" / "checkpoints" / "checkpoint-2").is_dir()
    monkeypatch.setattr(Trainer, "training_step", original)
    resumed = train(tmp_path / "crashed", max_steps=4)
    assert resumed["resumed_from"] == "checkpoint-2" and resumed["steps"] == 4
    assert resumed["losses"] == pytest.approx(reference["losses"], rel=1e-3)  # steps 1-2 come from the checkpoint


def distil_pipeline(tmp_path: Path, model_dir: Path) -> Path:
    """24 package descriptions with ground truth, 18 tags, mine 6 per document, judge with `model_dir`."""
    topics = ("audio player", "video editor", "chess game", "C compiler", "web browser", "mail client")
    documents = write_jsonl(
        tmp_path / "docs.jsonl",
        [{"id": f"p{i}", "text": f"A {topics[i % 6]}, version {i}", "labels": [f"t{i % 6}"]} for i in range(24)],
    )
    labels = write_jsonl(
        tmp_path / "labels.jsonl",
        [{"id": f"t{i}", "text": f"{topics[i % 6]} {('tool', 'program', 'utility')[i // 6]}"} for i in range(18)],
    )
    path = tmp_path / "pipeline.toml"
    path.write_text(
        '[pipeline]\nstages = ["ingest", "encode", "index", "mine", "judge", "distil", "tag", "evaluate"]\n'
        f'run_dir = "{tmp_path / "run"}"\n'
        f'[ingest]\ndocuments = "{documents}"\nlabels = "{labels}"\n'
        '[encode]\ndevice = "cpu"\n[mine]\nk = 6\n'
        f'[judge]\nmodel = "{model_dir}"\nmax_document_tokens = 16\n[judge.options]\ndevice = "cpu"\n'
        '[distil]\nrounds = 2\nholdout = 0.25\nlist_size = 4\nbatch_size = 6\nmax_steps = 2\ndevice = "cpu"\n'
        "min_improvement = -1.0\n[tag]\nk = 5\n[evaluate]\nks = [1, 5]\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.slow
def test_distil_pipeline_tags_with_the_distilled_encoder(tmp_path: Path, tiny_llama_dir: Path) -> None:
    path = distil_pipeline(tmp_path, tiny_llama_dir)
    run_cli("run", str(path))
    run = tmp_path / "run"
    report = json.loads((run / "distil" / "report.json").read_text())
    assert report["rounds_run"] == 2 and report["holdout_documents"] == 6 and report["training_documents"] == 18
    second = report["rounds"][2]
    assert second["judge"]["cache_hits"] > 0 and second["judge"]["judged_now"] < second["judge"]["unique_pairs"]
    assert set(report["label_free"]) == {"0", "1", "2"} and "llm_p@5" in report["label_free"]["2"]
    table = (run / "distil" / "rounds.md").read_text().splitlines()
    rows = [line for line in table if line[:3] in {"| 0", "| 1", "| 2"}]
    assert len(rows) == 3
    for number, row in enumerate(rows):
        scores, judge = report["label_free"][str(number)], report["rounds"][number]["judge"]
        assert f"| {scores['llm_p@1']:.4f} | {scores['llm_p@5']:.4f} |" in row and f"| {judge['judged_now']} |" in row
    assert [row.split(" | ")[0] for row in rows if "(kept)" in row] == [f"| {report['best_round']} (kept)"]
    assert report["distinct_pairs"] == report["pairs_judged"]  # a fresh judge cache judges each distinct pair once
    assert f"every round: {report['distinct_pairs']:,} " in "\n".join(table)
    assert (run / "distil" / "model" / "config_sentence_transformers.json").is_file()
    assert not (run / "distil" / "rounds" / "round-1" / "checkpoints").exists()
    first = json.loads((run / "tag" / "report.json").read_text())
    tags = pl.read_parquet(run / "tag" / "tags.parquet")
    assert first["documents"] == 24 and tags.height == 24 * 5
    result = run_cli("run", str(path), "--set", "distil.rounds=1")
    assert "[distil] running" in result.stdout and "[tag] running" in result.stdout
    assert "[judge] up to date" in result.stdout

    # a judging budget of 48 pairs per pass: the 8 documents with the smallest gap between the student's first two
    # scores in the judge stage; in each round the 6 held-out documents' top-5 first, then 3 whole documents
    mined = pl.read_parquet(run / "mine" / "candidates.parquet")
    gaps = mined.filter(pl.col("student_rank") <= 2).group_by("doc_id").agg(gap=-pl.col("student_score").diff().max())
    least_sure = set(gaps.sort("gap", "doc_id").head(8)["doc_id"])
    run_cli("run", str(path), "--set", "mine.budget=48")
    within = pl.read_parquet(run / "mine" / "candidates.parquet")
    assert set(within["doc_id"]) == least_sure and within.height == 48
    assert json.loads((run / "mine" / "report.json").read_text())["candidates_over_budget"] == 24 * 6 - 48
    report = json.loads((run / "distil" / "report.json").read_text())
    assert all(scores["documents"] == 6 for scores in report["label_free"].values())  # round 0 topped up
    topped_up = pl.read_parquet(run / "distil" / "rounds" / "round-0-held-out" / "judgments.parquet")
    assert report["rounds"][0]["held_out_top_up"]["judged_now"] == 0  # the first run's judgments are in the cache
    for number in (1, 2):
        judged = pl.read_parquet(run / "distil" / "rounds" / f"round-{number}" / "judgments.parquet")
        ranks = judged.group_by("doc_id").agg(pl.col("student_rank").sort())["student_rank"].to_list()
        assert sorted(ranks) == sorted([[1, 2, 3, 4, 5]] * 6 + [[1, 2, 3, 4, 5, 6]] * 3)
    held_out = set(judged.group_by("doc_id").len().filter(pl.col("len") == 5)["doc_id"])
    assert set(topped_up["doc_id"]) == held_out - least_sure != set()  # round 0's held-out documents completed
