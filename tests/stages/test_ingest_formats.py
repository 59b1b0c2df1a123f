"""Ingest of every input format: XC raw text, CSV and Parquet with custom columns, a separate ground-truth file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from eztag.errors import EztagError
from eztag.pipeline import Pipeline
from tests.support.bad_inputs import jsonl


def ingest(tmp_path: Path, table: str) -> tuple[dict, Path]:
    """Run only the ingest stage of a pipeline with this [ingest] table; (report, ingest dir)."""
    path = tmp_path / "pipeline.toml"
    path.write_text(f'[pipeline]\nstages = ["ingest"]\nrun_dir = "{tmp_path / "run"}"\n[ingest]\n{table}\n')
    report = Pipeline.load(path).run(tmp_path / "run")["ingest"]
    return report, tmp_path / "run" / "ingest"


def pairs(ingest_dir: Path) -> list[tuple[str, str]]:
    return sorted(pl.read_parquet(ingest_dir / "ground_truth.parquet").iter_rows())


def test_xc_raw_text(tmp_path: Path) -> None:
    docs = [
        {"uid": "p1", "title": "Chess", "content": "A chess engine", "target_ind": [1]},
        {"uid": "p2", "title": "Player", "content": "Plays music", "target_ind": [0, 1]},
    ]
    (tmp_path / "trn.json.gz").write_bytes(gzip.compress(jsonl(docs)))
    (tmp_path / "lbl.json.gz").write_bytes(
        gzip.compress(jsonl([{"uid": "audio", "title": "Audio"}, {"uid": "game", "title": "Game"}]))
    )
    report, out = ingest(tmp_path, 'documents = "trn.json.gz"\nlabels = "lbl.json.gz"\nformat = "xc"')
    assert (report["documents"], report["labels"]) == (2, 2)
    documents = pl.read_parquet(out / "documents.parquet")
    assert documents.rows() == [("p1", "Chess", "A chess engine"), ("p2", "Player", "Plays music")]
    assert pairs(out) == [("p1", "game"), ("p2", "audio"), ("p2", "game")]


def test_csv_with_custom_columns(tmp_path: Path) -> None:
    (tmp_path / "docs.csv").write_text('key,body,tags\nd1,"Play, music",audio;video\nd2,Chess,game\n')
    (tmp_path / "labels.tsv").write_text("tag\tname\tabout\naudio\tAudio\tsound\nvideo\tVideo\t\ngame\tGames\tfun\n")
    table = (
        'documents = "docs.csv"\nlabels = "labels.tsv"\ndoc_id = "key"\ndoc_text = "body"\ndoc_title = "none"\n'
        'doc_labels = "tags"\nlabel_separator = ";"\nlabel_id = "tag"\nlabel_text = "name"\nlabel_description = "about"'
    )
    with pytest.raises(EztagError, match=r"docs.csv: field 'none': missing column"):
        ingest(tmp_path, table)  # an explicitly named column must exist
    report, out = ingest(tmp_path, table.replace('doc_title = "none"\n', ""))
    assert (report["documents"], report["labels"]) == (2, 3)
    assert pl.read_parquet(out / "documents.parquet")["text"].to_list() == ["Play, music", "Chess"]
    assert pl.read_parquet(out / "labels.parquet")["description"].to_list() == ["sound", None, "fun"]
    assert pairs(out) == [("d1", "audio"), ("d1", "video"), ("d2", "game")]


def test_parquet_with_custom_columns_and_ground_truth_file(tmp_path: Path) -> None:
    pl.DataFrame({"pid": [10, 11], "desc": ["Media player", "Chess"]}).write_parquet(tmp_path / "docs.parquet")
    pl.DataFrame({"lid": ["audio", "game"], "label": ["Audio", "Games"]}).write_parquet(tmp_path / "labels.parquet")
    pl.DataFrame({"doc_id": ["10", "11", "11"], "label_id": ["audio", "game", "game"]}).write_parquet(
        tmp_path / "truth.parquet"
    )
    table = (
        'documents = "docs.parquet"\nlabels = "labels.parquet"\nground_truth = "truth.parquet"\n'
        'doc_id = "pid"\ndoc_text = "desc"\nlabel_id = "lid"\nlabel_text = "label"'
    )
    report, out = ingest(tmp_path, table)
    assert pl.read_parquet(out / "documents.parquet")["doc_id"].to_list() == ["10", "11"]
    assert pairs(out) == [("10", "audio"), ("11", "game")]
    assert report["ground_truth_pairs"] == 2


def test_jsonl_keys_may_vary_per_row(tmp_path: Path) -> None:
    (tmp_path / "docs.jsonl").write_bytes(jsonl([{"id": "a", "text": "x"}, {"id": "b", "text": "y", "labels": ["l"]}]))
    (tmp_path / "labels.jsonl").write_text(json.dumps({"id": "l", "text": "L"}) + "\n")
    _, out = ingest(tmp_path, 'documents = "docs.jsonl"\nlabels = "labels.jsonl"')
    assert pairs(out) == [("b", "l")]


def test_label_facet_is_kept_and_optional(tmp_path: Path) -> None:
    (tmp_path / "docs.jsonl").write_bytes(jsonl([{"id": "d1", "text": "Plays music", "labels": ["audio"]}]))
    (tmp_path / "labels.jsonl").write_bytes(
        jsonl([{"id": "audio", "text": "Audio", "facet": " use "}, {"id": "game", "text": "Games", "facet": ""}])
    )
    _, out = ingest(tmp_path, 'documents = "docs.jsonl"\nlabels = "labels.jsonl"')
    assert pl.read_parquet(out / "labels.parquet")["facet"].to_list() == ["use", None]
    with pytest.raises(EztagError, match=r"labels.jsonl: field 'branch': missing column"):
        ingest(tmp_path, 'documents = "docs.jsonl"\nlabels = "labels.jsonl"\nlabel_facet = "branch"')
    (tmp_path / "labels.jsonl").write_bytes(jsonl([{"id": "audio", "text": "Audio"}]))
    _, out = ingest(tmp_path, 'documents = "docs.jsonl"\nlabels = "labels.jsonl"')
    assert pl.read_parquet(out / "labels.parquet")["facet"].to_list() == [None]
