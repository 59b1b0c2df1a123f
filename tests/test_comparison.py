"""Paired bootstrap intervals in `eztag compare`: two real runs over 60 debtags documents that differ in the label
template, the evaluate stage's per_document.parquet against metrics.json, a run against a copy of itself, runs over
different documents and a run evaluated before per_document.parquet existed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from eztag import comparison
from eztag.cli import main
from tests.conftest import DEBTAGS, eztag, run_cli, write_jsonl

pytestmark = pytest.mark.xdist_group("comparison")  # one worker: the module fixture runs the pipelines once

KS = [1, 3, 10]
DOCUMENTS = 60
TEMPLATE = 'encode.label_template="{text}[ ({description})]"'


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(base, described): the same 60 documents and their 109 gold labels, tagged with the label texts alone and
    with their descriptions appended; 3 tags selected per document."""
    folder = tmp_path_factory.mktemp("comparison")
    rows = [json.loads(line) for line in (DEBTAGS / "sample.jsonl").open(encoding="utf-8")][:DOCUMENTS]
    gold = {label for row in rows for label in row["labels"]}
    labels = [json.loads(line) for line in (DEBTAGS / "labels.jsonl").open(encoding="utf-8")]
    documents = write_jsonl(folder / "docs.jsonl", rows)
    label_file = write_jsonl(folder / "labels.jsonl", [label for label in labels if label["id"] in gold])
    pipeline = folder / "pipeline.toml"
    pipeline.write_text(
        '[pipeline]\nname = "cmp"\nstages = ["ingest", "encode", "index", "tag", "evaluate"]\n'
        f'[ingest]\ndocuments = "{documents}"\nlabels = "{label_file}"\n'
        f"[tag]\nk = 10\nmax_per_doc = 3\n[evaluate]\nks = {KS}\n",
        encoding="utf-8",
    )
    base, described = folder / "base", folder / "described"
    # in this process (the CLI's own entry point): the encoder's imports are paid once
    assert main(["run", str(pipeline), "--run-dir", str(base)]) == 0
    shutil.copytree(base, described)  # ingest is reused; encode and everything after it rerun
    assert main(["run", str(pipeline), "--run-dir", str(described), "--set", TEMPLATE]) == 0
    return base, described


def per_document(run_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(run_dir / "evaluate" / "per_document.parquet").sort("doc_id")


def metrics_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "evaluate" / "metrics.json").read_text())


def test_per_document_numbers_average_to_metrics_json(runs: tuple[Path, Path]) -> None:
    for run_dir in runs:
        frame, data = per_document(run_dir), metrics_json(run_dir)
        assert frame.height == data["documents_evaluated"] == DOCUMENTS
        assert frame["doc_id"].n_unique() == DOCUMENTS
        for k in KS:
            for metric in ("P", "R", "nDCG"):
                assert float(np.mean(frame[f"{metric}@{k}"].to_numpy())) == data["metrics"][f"{metric}@{k}"]
            psp = frame[f"PSP@{k}:num"].sum() / frame[f"PSP@{k}:den"].sum()
            assert psp == pytest.approx(data["metrics"][f"PSP@{k}"], rel=1e-12, abs=0)
            assert (frame[f"PSP@{k}:den"] > 0).all()
        assert float(frame["example_F1"].mean()) == pytest.approx(data["set_metrics"]["example_F1"], rel=1e-12)


def test_intervals_between_two_real_runs(runs: tuple[Path, Path], tmp_path: Path) -> None:
    base, described = runs
    result = comparison.compare_runs(runs, ["base", "described"], KS)
    assert result.notes == [] and result.documents == DOCUMENTS and result.resamples == 2000
    cells = result.intervals["described"]
    assert set(cells) == {f"{m}@{k}" for m in ("P", "R", "nDCG", "PSP") for k in KS} | {"example_F1"}
    a, b, json_a, json_b = per_document(base), per_document(described), metrics_json(base), metrics_json(described)
    assert a["doc_id"].to_list() == b["doc_id"].to_list()
    for column, interval in cells.items():
        if column.startswith("PSP"):
            num_a, den_a = a[f"{column}:num"].to_numpy(), a[f"{column}:den"].to_numpy()
            num_b, den_b = b[f"{column}:num"].to_numpy(), b[f"{column}:den"].to_numpy()
            assert interval.difference == num_b.sum() / den_b.sum() - num_a.sum() / den_a.sum()
            # the ratio-of-sums statistic is metrics.json's PSP difference (to the last bits of the sums)
            expected = json_b["metrics"][column] - json_a["metrics"][column]
            assert interval.difference == pytest.approx(expected, rel=1e-9, abs=1e-12)
            continue
        # a mean difference: the mean of the per-document numbers of each run, and of their difference
        d = b[column].to_numpy() - a[column].to_numpy()
        assert interval.difference == b[column].to_numpy().mean() - a[column].to_numpy().mean()
        assert interval.difference == pytest.approx(d.mean(), abs=1e-12)
        if column == "example_F1":
            expected = json_b["set_metrics"][column] - json_a["set_metrics"][column]
        else:
            expected = json_b["metrics"][column] - json_a["metrics"][column]
        assert interval.difference == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert interval.low <= interval.difference <= interval.high, column
        if d.std() > 0:
            # paired: about the normal interval of the per-document differences' mean (an unpaired bootstrap of
            # two correlated runs is several times wider)
            half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
            assert 0.6 * 2 * half <= interval.high - interval.low <= 1.4 * 2 * half, column
    assert any(interval.low < interval.high for interval in cells.values())  # the runs differ
    again = comparison.compare_runs(runs, ["base", "described"], KS)
    assert again.intervals == result.intervals  # seeded: reproducible

    out = tmp_path / "cmp"
    printed = run_cli("compare", str(base), str(described), "--out", str(out)).stdout
    written = (out / "comparison.md").read_text(encoding="utf-8")
    assert written in printed
    assert "## Differences from the baseline base (paired bootstrap)" in written
    assert f"{DOCUMENTS} documents resampled together, 2000 resamples" in written
    row = " | ".join(cells[f"P@{k}"].text for k in KS)
    assert f"| described | P | {row} |" in written
    assert f"| described | {cells['example_F1'].text} |" in written
    page = (out / "comparison.html").read_text(encoding="utf-8")
    assert f'data-run="described" data-interval="PSP@3">{cells["PSP@3"].text}</td>' in page
    assert 'data-interval="example_F1"' in page

    fewer = run_cli(
        "compare", str(base), str(described), "--out", str(out), "--resamples", "300", "--confidence", "0.8"
    ).stdout
    assert "[80% interval]" in fewer and "300 resamples" in fewer
    narrow = comparison.compare_runs(runs, ["base", "described"], KS, resamples=300, confidence=0.8)
    assert f"| described | {narrow.intervals['described']['example_F1'].text} |" in fewer
    bad = eztag("compare", str(base), str(described), "--out", str(out), "--confidence", "95")
    assert bad.returncode == 2 and "expected a number between 0 and 1" in bad.stderr


def test_a_run_against_a_copy_of_itself_is_exactly_zero(runs: tuple[Path, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(runs[1], copy)
    result = comparison.compare_runs([runs[1], copy], ["described", "copy"], KS)
    assert result.notes == []
    for interval in result.intervals["copy"].values():
        assert (interval.difference, interval.low, interval.high) == (0.0, 0.0, 0.0)
        assert interval.text == "+0.0000 [+0.0000, +0.0000]"
    printed = run_cli("compare", str(runs[1]), str(copy), "--out", str(tmp_path / "cmp")).stdout
    zero = " | ".join(["+0.0000 [+0.0000, +0.0000]"] * len(KS))
    for metric in ("P", "R", "nDCG", "PSP"):
        assert f"| copy | {metric} | {zero} |" in printed


def test_ranked_lists_agreement_by_hand(runs: tuple[Path, Path], tmp_path: Path) -> None:
    base, described = runs
    tags = [pl.read_parquet(run / "tag" / "tags.parquet") for run in runs]
    result = comparison.compare_runs(list(runs), ["base", "described"], KS).agreement["described"]
    assert result["documents"] == DOCUMENTS
    for k in KS:
        top = [
            {doc: set(group.filter(pl.col("rank") <= k)["label_id"]) for (doc,), group in frame.group_by("doc_id")}
            for frame in tags
        ]
        overlap = np.mean([len(top[0][doc] & top[1][doc]) / len(top[0][doc]) for doc in top[0]])
        same = np.mean([top[0][doc] == top[1][doc] for doc in top[0]])
        assert result[f"overlap@{k}"] == pytest.approx(overlap) and result[f"same@{k}"] == pytest.approx(same)
    assert 0 < result["overlap@10"] < 1  # the label template moved some labels in and out of the top 10
    # a run tagged on half of the documents: compared over those; a copy agrees everywhere
    half = tmp_path / "half"
    shutil.copytree(described, half)
    kept = sorted(set(tags[1]["doc_id"]))[: DOCUMENTS // 2]
    tags[1].filter(pl.col("doc_id").is_in(kept)).write_parquet(half / "tag" / "tags.parquet")
    assert comparison.top_k_agreement(base, half, KS)["documents"] == DOCUMENTS // 2
    assert comparison.top_k_agreement(described, described, KS) == {"documents": DOCUMENTS} | {
        f"{measure}@{k}": 1.0 for k in KS for measure in ("overlap", "same")
    }
    out = tmp_path / "cmp"
    printed = run_cli("compare", str(base), str(described), "--out", str(out)).stdout
    cells = " | ".join(f"{result[f'overlap@{k}']:.4f}" for k in KS)
    assert f"| described | {DOCUMENTS} | overlap | {cells} |" in printed
    page = (out / "comparison.html").read_text(encoding="utf-8")
    assert f'data-agreement="same@10">{result["same@10"]:.4f}<' in page


def test_labels_that_moved_by_hand(runs: tuple[Path, Path], tmp_path: Path) -> None:
    """found@10 per gold label in each run, counted from the files by hand, against the comparison's moves."""
    gold = pl.read_parquet(runs[0] / "ingest" / "ground_truth.parquet").unique()
    texts = dict(pl.read_parquet(runs[0] / "ingest" / "labels.parquet").select("label_id", "text").iter_rows())
    found = []
    for run in runs:
        top = pl.read_parquet(run / "tag" / "tags.parquet").filter(pl.col("rank") <= 10)
        pairs = set(top.select("doc_id", "label_id").iter_rows())
        found.append(
            {
                label: sum((doc, label) in pairs for doc in group["doc_id"])
                for (label,), group in gold.group_by("label_id")
            }
        )
    change = {label: found[1][label] - found[0][label] for label in found[0]}
    moves = comparison.compare_runs(list(runs), ["base", "described"], KS).moves["described"]
    assert (moves.k, moves.gained, moves.lost) == (
        10,
        sum(c > 0 for c in change.values()),
        sum(c < 0 for c in change.values()),
    )
    assert moves.unchanged == sum(c == 0 for c in change.values()) and moves.gained + moves.lost > 0
    support = dict(gold.group_by("label_id").agg(pl.len()).iter_rows())
    for rows, sign in ((moves.most_lost, -1), (moves.most_gained, 1)):
        expected = sorted(
            (label for label, c in change.items() if c * sign > 0),
            key=lambda label: (-change[label] * sign, -support[label], label),
        )[:3]
        assert [row["label_id"] for row in rows] == expected
        assert all(row["text"] == texts[row["label_id"]] for row in rows)
        assert all(
            (row["baseline"], row["run"]) == (found[0][row["label_id"]], found[1][row["label_id"]]) for row in rows
        )
    out = tmp_path / "cmp"
    printed = run_cli("compare", *(str(run) for run in runs), "--out", str(out)).stdout
    assert (
        f"| described | {moves.gained} | {moves.lost} | {moves.unchanged} | {moves.cell(moves.most_lost)} |" in printed
    )
    page = (out / "comparison.html").read_text(encoding="utf-8")
    assert f'data-moves="lost">{moves.lost}<' in page
    other = tmp_path / "other-gold"  # other ground truth: found@10 counts other documents, so no moves
    shutil.copytree(runs[1], other)
    path = other / "ingest" / "ground_truth.parquet"
    pl.read_parquet(path).filter(pl.col("doc_id") != gold["doc_id"][0]).write_parquet(path)
    assert comparison.compare_runs([runs[0], other], ["base", "other"], KS).moves == {}


def test_runs_over_different_documents_get_a_note(runs: tuple[Path, Path], tmp_path: Path) -> None:
    fewer = tmp_path / "fewer"
    shutil.copytree(runs[1], fewer)
    path = fewer / "evaluate" / "per_document.parquet"
    frame = pl.read_parquet(path)
    frame.head(DOCUMENTS - 5).write_parquet(path)
    result = run_cli("compare", str(runs[0]), str(fewer), "--out", str(tmp_path / "cmp"))
    notes = [line for line in result.stdout.splitlines() if line.startswith("Note: ")]
    assert notes == [
        f"Note: fewer: no intervals: {path}: runs evaluated different documents: "
        f"{DOCUMENTS} in base, {DOCUMENTS - 5} in fewer, {DOCUMENTS - 5} in common"
    ]
    assert "| fewer | P | " in result.stdout  # the metric table is still there
    assert "| fewer | P | +" not in result.stdout and "| fewer | P | -" not in result.stdout  # but no interval
    assert notes[0][len("Note: ") :] in (tmp_path / "cmp" / "comparison.html").read_text(encoding="utf-8")


def test_a_run_evaluated_before_per_document_numbers_gets_a_note(runs: tuple[Path, Path], tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(runs[1], old)
    (old / "evaluate" / "per_document.parquet").unlink()
    for order in ((runs[0], old), (old, runs[0])):
        result = run_cli("compare", *map(str, order), "--out", str(tmp_path / "cmp"))
        assert "Traceback" not in result.stderr
        assert (
            f"Note: old: no intervals: {old / 'evaluate' / 'per_document.parquet'} is missing (evaluated by an older "
            f"eztag); rerun its evaluate stage: eztag evaluate PIPELINE.toml --run-dir {old} --force evaluate "
            "(with the run's --set options)"
        ) in result.stdout
        assert "| base | P | " in result.stdout and "| old | P | " in result.stdout
        assert not any(f"| {name} | P | {sign}" in result.stdout for name in ("base", "old") for sign in "+-")
    # the advice works: evaluate reruns and writes the file, metrics.json unchanged
    before = (old / "evaluate" / "metrics.json").read_bytes()
    pipeline = runs[0].parent / "pipeline.toml"
    assert main(["evaluate", str(pipeline), "--run-dir", str(old), "--set", TEMPLATE, "--force", "evaluate"]) == 0
    assert (old / "evaluate" / "metrics.json").read_bytes() == before
    result = comparison.compare_runs([runs[1], old], ["described", "old"], KS)
    assert result.notes == [] and result.intervals["old"]["P@1"].text == "+0.0000 [+0.0000, +0.0000]"
