"""Every bad input fails with one line naming file, row and field, or is skipped and counted; never a traceback."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import assert_one_line_error, eztag, pipeline_file, run_cli
from tests.support.bad_inputs import CASES, DOCS, LABELS, SKIP_DOCUMENT_COUNTS, Case, jsonl, skip_documents
from tests.support.reliability import TALLY

pytestmark = pytest.mark.xdist_group("bad-inputs")  # one worker: the module fixture runs once


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """`eztag ingest` on every case, four at a time (each call is mostly interpreter start-up)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    with ThreadPoolExecutor(4) as pool:
        done = pool.map(lambda case: eztag("ingest", str(case.write(root / case.name))), CASES)
        return dict(zip([case.name for case in CASES], done, strict=True))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_fails_with_one_line(case: Case, results: dict[str, subprocess.CompletedProcess[str]]) -> None:
    assert_one_line_error(results[case.name], *case.expect)
    TALLY["bad_inputs"] += 1


def test_skip_mode_counts_every_problem(tmp_path: Path) -> None:
    pipeline = Case("skip_documents", {"docs.jsonl": skip_documents()}).write(tmp_path)
    assert_one_line_error(eztag("ingest", str(pipeline)), "docs.jsonl", "row 4", "'text'")
    result = eztag("ingest", str(pipeline), "--set", "ingest.on_error=skip")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "ingest" / "report.json").read_text())
    assert report["skipped"] == SKIP_DOCUMENT_COUNTS
    assert report["documents"] == 4  # d1, d2, d3 and d4 (kept without its unknown labels)
    assert pl.read_parquet(tmp_path / "run" / "ingest" / "documents.parquet")["doc_id"].to_list() == [
        "d1",
        "d2",
        "d3",
        "d4",
    ]
    TALLY["bad_inputs"] += len(SKIP_DOCUMENT_COUNTS)


def test_skip_mode_labels_and_ground_truth(tmp_path: Path) -> None:
    labels = jsonl([*LABELS, LABELS[0], {"id": "long", "text": "x" * 100_000}, {"id": None, "text": "y"}])
    truth = jsonl(
        [
            {"doc_id": "d1", "label_id": "audio"},
            {"doc_id": "d1", "label_id": "chess"},
            {"doc_id": "d9", "label_id": "audio"},
            {"doc_id": 2.5, "label_id": "audio"},
        ]
    )
    docs = jsonl([{"id": doc["id"], "text": doc["text"]} for doc in DOCS])
    case = Case(
        "skip_labels", {"labels.jsonl": labels, "gt.jsonl": truth, "docs.jsonl": docs}, {"ground_truth": "gt.jsonl"}
    )
    result = eztag("ingest", str(case.write(tmp_path)), "--set", "ingest.on_error=skip")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "ingest" / "report.json").read_text())
    assert report["skipped"] == {
        "duplicate_id": 1,
        "label_too_long": 1,
        "bad_id": 2,
        "unknown_label": 1,
        "unknown_document": 1,
    }
    assert (report["labels"], report["ground_truth_pairs"]) == (3, 1)
    TALLY["bad_inputs"] += 2


def test_skip_mode_still_fails_when_nothing_is_left(tmp_path: Path) -> None:
    case = Case("all_labels_bad", {"labels.jsonl": jsonl([{"id": "a", "text": ""}, {"id": "b", "text": None}])})
    result = eztag("ingest", str(case.write(tmp_path)), "--set", "ingest.on_error=skip")
    assert_one_line_error(result, "labels.jsonl", "label set is empty")
    TALLY["bad_inputs"] += 1


def test_huge_document_is_truncated_and_counted(tmp_path: Path) -> None:
    case = Case("huge_document", {"docs.jsonl": jsonl([*DOCS, {"id": "big", "text": "word " * 200_000}])})
    result = eztag("ingest", str(case.write(tmp_path)))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "ingest" / "report.json").read_text())
    assert report["documents_truncated"] == 1 and report["skipped"] == {}
    texts = pl.read_parquet(tmp_path / "run" / "ingest" / "documents.parquet")["text"].to_list()
    assert len(texts[-1]) <= 100_000
    TALLY["bad_inputs"] += 1


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    case = Case("bom", {"docs.jsonl": b"\xef\xbb\xbf" + jsonl(DOCS), "docs.csv": b"\xef\xbb\xbfid,text\nd1,x\n"})
    pipeline = case.write(tmp_path)
    assert eztag("ingest", str(pipeline)).returncode == 0
    result = eztag("ingest", str(pipeline), "--set", "ingest.documents='docs.csv'", "--force", "ingest")
    assert result.returncode == 0, result.stderr
    TALLY["bad_inputs"] += 1


def test_missing_pipeline_file_and_bad_override(tmp_path: Path) -> None:
    assert_one_line_error(eztag("run", str(tmp_path / "none.toml")), "none.toml", "file not found")
    assert_one_line_error(eztag("run", str(tmp_path)), str(tmp_path), "directory")
    pipeline = Case("override").write(tmp_path)
    assert_one_line_error(eztag("ingest", str(pipeline), "--set", "ingest"), "--set", "section.key=value")
    ignored = eztag("ingest", str(pipeline), "--set", "tag.k=3")  # a stage left out of the run: warned, not fatal
    assert ignored.returncode == 0 and "table [tag] is ignored: 'tag' is not in pipeline.stages" in ignored.stderr
    TALLY["bad_inputs"] += 4


def test_a_cache_folder_where_a_file_is_names_the_setting(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    """`[encode] label_cache`, `[index] cache` and the LLM stages' `cache_dir` must be folders: a file there is a
    one-line error before any model loads, and the stages finished before it stay finished."""
    pipeline = pipeline_file(tmp_path, *small_inputs, stages='"ingest", "encode", "index"')
    run_cli("run", str(pipeline))  # in this process: the stages before the failing one, the encoder loaded once
    taken = tmp_path / "a-file"
    taken.write_text("not a folder\n")
    index_cache = eztag("run", str(pipeline), "--set", f"index.cache='{taken / 'below'}'")
    assert_one_line_error(index_cache, str(taken / "below"), "is not a folder", "index.cache")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert sorted(manifest["stages"]) == ["encode", "ingest"]
    label_cache = eztag("run", str(pipeline), "--set", f"encode.label_cache='{taken}'")
    assert_one_line_error(label_cache, str(taken), "is not a folder", "encode.label_cache")
    llm_stages = (
        ("judge", '"ingest", "encode", "index", "mine", "judge"', "[mine]\nk = 2\n[judge]\n"),
        ("synonyms", '"ingest", "encode", "synonyms"', "[synonyms]\n"),
    )
    for stage, stages, table in llm_stages:  # a model that is not there: the cache folder must fail first
        extra = f"{table}model = '{tmp_path / 'no-model'}'\ncache_dir = '{taken}'\n"
        failed = run_cli("run", str(pipeline_file(tmp_path, *small_inputs, extra=extra, stages=stages)), check=False)
        assert_one_line_error(failed, str(taken), "is not a folder", f"{stage}.cache_dir")
        finished = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
        assert stage not in finished and {"ingest", "encode"} <= set(finished)
    TALLY["bad_inputs"] += 4
