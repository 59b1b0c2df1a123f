"""The bad-input corpus: each case writes its input files and a pipeline into a folder.

Generated at test time (binary cases such as invalid UTF-8, truncated gzip or Parquet, a 1 MB document are
easier to build than to commit); tests/test_bad_inputs.py runs the CLI on every case.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
from pathlib import Path

import polars as pl

LABELS = [{"id": "audio", "text": "Audio"}, {"id": "video", "text": "Video"}, {"id": "game", "text": "Games"}]
DOCS = [
    {"id": "d1", "text": "A media player", "labels": ["audio", "video"]},
    {"id": "d2", "text": "A chess game", "labels": ["game"]},
    {"id": "d3", "text": "Music player", "labels": ["audio"]},
]


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def docs_with(row2: dict | str | bytes) -> bytes:
    """The good documents with row 2 replaced (a dict, or a raw line)."""
    line = row2 if isinstance(row2, bytes) else (row2 if isinstance(row2, str) else json.dumps(row2)).encode()
    return jsonl(DOCS[:1]) + line + b"\n" + jsonl(DOCS[2:])


@dataclasses.dataclass
class Case:
    """Input files, pipeline tables, and the fragments the one-line error must contain."""

    name: str
    files: dict[str, bytes | None] = dataclasses.field(default_factory=dict)  # None: a directory
    ingest: dict[str, object] = dataclasses.field(default_factory=dict)
    tables: str = ""
    stages: tuple[str, ...] = ("ingest",)
    expect: tuple[str, ...] = ()
    raw_toml: bytes | None = None  # the whole pipeline file, for TOML-level cases

    def write(self, folder: Path) -> Path:
        """Write the inputs and pipeline.toml into `folder`; return the pipeline file."""
        folder.mkdir(parents=True, exist_ok=True)
        files = {"docs.jsonl": jsonl(DOCS), "labels.jsonl": jsonl(LABELS), **self.files}
        for name, data in files.items():
            if data is None:
                (folder / name).mkdir()
            else:
                (folder / name).write_bytes(data)
        pipeline = folder / "pipeline.toml"
        if self.raw_toml is not None:
            pipeline.write_bytes(self.raw_toml)
            return pipeline
        ingest = {"documents": "docs.jsonl", "labels": "labels.jsonl", **self.ingest}
        lines = [
            "[pipeline]",
            f"stages = {json.dumps(list(self.stages))}",
            f'run_dir = "{folder / "run"}"',
            "[ingest]",
            *(f"{key} = {json.dumps(value)}" for key, value in ingest.items()),
            self.tables,
        ]
        pipeline.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return pipeline


def _truncated_gzip() -> bytes:
    data = gzip.compress(jsonl(DOCS * 50))
    return data[: len(data) // 2]


def _wrong_typed_docs(value: object, field: str = "id") -> bytes:
    return docs_with({**DOCS[1], field: value})


HEADER = (
    "[pipeline]\nstages = ['ingest', 'encode', 'index', 'tag']\n[ingest]\ndocuments = 'd.jsonl'\nlabels = 'l.jsonl'\n"
)
ENCODE_TAG = ("ingest", "encode", "index", "tag")

# Each case fails: exit 2, one line naming these fragments. Row numbers are 1-based data rows.
CASES: list[Case] = [
    # documents: values
    Case("empty_text", {"docs.jsonl": _wrong_typed_docs("", "text")}, expect=("docs.jsonl", "row 2", "'text'")),
    Case("whitespace_text", {"docs.jsonl": _wrong_typed_docs(" \n\t ", "text")}, expect=("row 2", "'text'", "empty")),
    Case("null_text", {"docs.jsonl": _wrong_typed_docs(None, "text")}, expect=("row 2", "'text'", "missing value")),
    Case("nan_text", {"docs.jsonl": docs_with('{"id": "d2", "text": NaN}')}, expect=("row 2", "'text'", "missing")),
    Case("nan_id", {"docs.jsonl": docs_with('{"id": NaN, "text": "x"}')}, expect=("row 2", "'id'", "missing value")),
    Case("id_float", {"docs.jsonl": _wrong_typed_docs(1.5)}, expect=("row 2", "'id'", "got float")),
    Case("id_bool", {"docs.jsonl": _wrong_typed_docs(True)}, expect=("row 2", "'id'", "got bool")),
    Case("id_list", {"docs.jsonl": _wrong_typed_docs(["d2"])}, expect=("row 2", "'id'", "got list")),
    Case("text_number", {"docs.jsonl": _wrong_typed_docs(42, "text")}, expect=("row 2", "'text'", "got int")),
    Case("labels_number", {"docs.jsonl": _wrong_typed_docs(7, "labels")}, expect=("row 2", "'labels'", "got int")),
    Case("labels_dict", {"docs.jsonl": _wrong_typed_docs({"a": 1}, "labels")}, expect=("row 2", "'labels'", "dict")),
    Case(
        "label_id_nested",
        {"docs.jsonl": _wrong_typed_docs([["audio"]], "labels")},
        expect=(
            "row 2",
            "'labels'",
        ),
    ),
    Case("duplicate_doc_id", {"docs.jsonl": _wrong_typed_docs("d1")}, expect=("row 2", "'id'", "duplicate", "row 1")),
    Case(
        "unknown_label_column",
        {"docs.jsonl": _wrong_typed_docs(["chess"], "labels")},
        expect=("docs.jsonl", "row 2", "'labels'", "unknown label id 'chess'"),
    ),
    # documents: lines and files
    Case(
        "invalid_utf8_jsonl", {"docs.jsonl": docs_with(b'{"id": "d2", "text": "caf\xe9"}')}, expect=("row 2", "UTF-8")
    ),
    Case(
        "invalid_utf8_csv",
        {"docs.csv": b"id,text\nd1,fine\nd2,caf\xe9\n"},
        {"documents": "docs.csv"},
        expect=("docs.csv", "row 2", "UTF-8"),
    ),
    Case("invalid_json", {"docs.jsonl": docs_with('{"id": "d2", "text": ')}, expect=("row 2", "invalid JSON")),
    Case("json_not_object", {"docs.jsonl": docs_with('["d2", "text"]')}, expect=("row 2", "JSON object")),
    Case("json_only_garbage", {"docs.jsonl": b"not json\n"}, expect=("docs.jsonl", "row 1", "invalid JSON")),
    Case("missing_column", {"docs.jsonl": jsonl([{"id": "d1", "body": "x"}])}, expect=("'text'", "missing column")),
    Case(
        "misspelt_column_in_file",
        {"docs.jsonl": jsonl([{"id": "d1", "txt": "x"}])},
        expect=("docs.jsonl", "'text'", "did you mean 'txt'"),
    ),
    Case("misspelt_column_in_config", ingest={"doc_text": "txet"}, expect=("docs.jsonl", "did you mean 'text'")),
    Case(
        "csv_missing_column",
        {"docs.csv": b"id,body\nd1,x\n"},
        {"documents": "docs.csv"},
        expect=("docs.csv", "'text'", "missing column"),
    ),
    Case("empty_jsonl", {"docs.jsonl": b""}, expect=("docs.jsonl", "empty")),
    Case("blank_lines_jsonl", {"docs.jsonl": b"\n  \n\n"}, expect=("docs.jsonl", "empty")),
    Case("empty_csv", {"docs.csv": b""}, {"documents": "docs.csv"}, expect=("docs.csv", "empty")),
    Case("csv_header_only", {"docs.csv": b"id,text\n"}, {"documents": "docs.csv"}, expect=("docs.csv", "no valid")),
    Case(
        "empty_parquet_file", {"docs.parquet": b""}, {"documents": "docs.parquet"}, expect=("docs.parquet", "Parquet")
    ),
    Case(
        "zero_row_parquet",
        {"docs.parquet": parquet(pl.DataFrame({"id": [], "text": []}, schema={"id": pl.String, "text": pl.String}))},
        {"documents": "docs.parquet"},
        expect=("docs.parquet", "no valid documents"),
    ),
    Case(
        "parquet_id_float",
        {"docs.parquet": parquet(pl.DataFrame({"id": [1.0, 2.5], "text": ["a", "b"]}))},
        {"documents": "docs.parquet"},
        expect=("docs.parquet", "row 1", "'id'", "got float"),
    ),
    Case("truncated_gzip", {"docs.jsonl.gz": _truncated_gzip()}, {"documents": "docs.jsonl.gz"}, expect=("gzip",)),
    Case(
        "truncated_parquet",
        {"docs.parquet": parquet(pl.DataFrame(DOCS))[:-40]},
        {"documents": "docs.parquet"},
        expect=("docs.parquet", "not a readable Parquet file"),
    ),
    Case("directory", {"docs.jsonl": b"", "folder.jsonl": None}, {"documents": "folder.jsonl"}, expect=("directory",)),
    Case("parquet_directory", {"pq.parquet": None}, {"documents": "pq.parquet"}, expect=("pq.parquet", "directory")),
    Case("missing_file", ingest={"documents": "nowhere.jsonl"}, expect=("nowhere.jsonl", "file not found")),
    Case("unknown_extension", {"docs.txt": b"x"}, {"documents": "docs.txt"}, expect=("docs.txt", "format")),
    # labels
    Case("duplicate_label_id", {"labels.jsonl": jsonl([*LABELS, LABELS[0]])}, expect=("labels.jsonl", "row 4", "'id'")),
    Case(
        "huge_label",
        {"labels.jsonl": jsonl([LABELS[0], {"id": "long", "text": "x" * 100_000}])},
        expect=("labels.jsonl", "row 2", "'text'", "max_label_chars"),
    ),
    Case("label_set_size_0", {"labels.jsonl": b""}, expect=("labels.jsonl", "empty")),
    Case(
        "label_null_id", {"labels.jsonl": jsonl([{"id": None, "text": "x"}])}, expect=("labels.jsonl", "row 1", "'id'")
    ),
    # ground truth file
    Case(
        "unknown_label_ground_truth",
        {"docs.jsonl": jsonl([{k: v for k, v in d.items() if k != "labels"} for d in DOCS])}
        | {"gt.jsonl": jsonl([{"doc_id": "d1", "label_id": "audio"}, {"doc_id": "d2", "label_id": "chess"}])},
        {"ground_truth": "gt.jsonl"},
        expect=("gt.jsonl", "row 2", "'label_id'", "chess"),
    ),
    Case(
        "unknown_document_ground_truth",
        {"gt.jsonl": jsonl([{"doc_id": "d9", "label_id": "audio"}])},
        {"ground_truth": "gt.jsonl"},
        expect=("gt.jsonl", "row 1", "'doc_id'", "d9"),
    ),
    Case(
        "ground_truth_missing_column",
        {"gt.jsonl": jsonl([{"doc": "d1", "label_id": "audio"}])},
        {"ground_truth": "gt.jsonl"},
        expect=("gt.jsonl", "'doc_id'", "did you mean 'doc'"),
    ),
    Case(
        "xc_index_out_of_range",
        {
            "trn.json.gz": gzip.compress(jsonl([{"uid": "a", "title": "t", "content": "c", "target_ind": [0, 3]}])),
            "lbl.json.gz": gzip.compress(jsonl([{"uid": "L0", "title": "zero"}])),
        },
        {"documents": "trn.json.gz", "labels": "lbl.json.gz", "format": "xc"},
        expect=("trn.json.gz", "row 1", "'target_ind'", "index 3"),
    ),
    # configuration
    Case(
        "conflict_ground_truth_doc_labels",
        ingest={"ground_truth": "gt.jsonl", "doc_labels": "tags"},
        expect=("pipeline.toml", "[ingest]", "not both"),
    ),
    Case(
        "min_above_max",
        tables="[tag]\nmin_per_doc = 5\nmax_per_doc = 2",
        stages=ENCODE_TAG,
        expect=("pipeline.toml", "[tag]", "min_per_doc"),
    ),
    Case("k_zero", tables="[tag]\nk = 0", stages=ENCODE_TAG, expect=("pipeline.toml", "[tag]", "k must be")),
    Case(
        "probability_rule_without_calibrator",
        tables='[tag]\nrule = "expected_f1"',
        stages=ENCODE_TAG,
        expect=("pipeline.toml", "tag.rule", "needs calibrated probabilities", "calibrate stage"),
    ),
    Case(
        "threshold_without_its_rule",
        tables="[tag]\nthreshold = 0.3",
        stages=ENCODE_TAG,
        expect=("pipeline.toml", "[tag]", "rule = 'threshold'"),
    ),
    Case("unknown_key", ingest={"documnets": "docs.jsonl"}, expect=("pipeline.toml", "did you mean 'documents'")),
    Case("unknown_table", tables="[ingset]\nx = 1", expect=("pipeline.toml", "[ingset]", "did you mean 'ingest'")),
    Case("unknown_stage", stages=("ingest", "encdoe"), expect=("pipeline.toml", "'encdoe'", "did you mean 'encode'")),
    Case("missing_upstream", stages=("ingest", "tag"), expect=("pipeline.toml", "needs stage")),
    Case(
        "wrong_type_int",
        tables="[tag]\nk = 'ten'",
        stages=ENCODE_TAG,
        expect=("pipeline.toml", "tag.k", "expected int"),
    ),
    Case("wrong_type_literal", ingest={"on_error": "ignore"}, expect=("pipeline.toml", "ingest.on_error", "'ignore'")),
    Case(
        "wrong_type_list",
        tables="[evaluate]\nks = 5",
        stages=(*ENCODE_TAG, "evaluate"),
        expect=("pipeline.toml", "evaluate.ks", "expected a list"),
    ),
    Case("not_a_table", raw_toml=b"pipeline = 5\n", expect=("pipeline.toml", "'pipeline' must be a table")),
    Case("missing_pipeline_table", raw_toml=b"[ingest]\ndocuments = 'd'\n", expect=("pipeline.toml", "[pipeline]")),
    Case("invalid_toml", raw_toml=b"[pipeline\nstages = [", expect=("pipeline.toml", "invalid TOML")),
    Case("invalid_toml_utf8", raw_toml=HEADER.encode() + b"# \xff\n", expect=("pipeline.toml", "UTF-8")),
    *(
        Case(
            f"template_{name}",
            tables=f"[encode]\nlabel_template = {json.dumps(template)}",
            stages=("ingest", "encode"),
            expect=("pipeline.toml", "encode.label_template", message),
        )
        for name, template, message in (
            ("unknown_field", "{name}", "unknown template field"),
            ("attribute", "{text.__class__}", "not a plain field name"),
            ("conversion", "{text!r}", "not a plain field name"),
            ("positional", "{0}", "not a plain field name"),
            ("index", "{text[0]}", "not a plain field name"),
            ("format_spec", "{text:>10}", "not a plain field name"),
        )
    ),
]

# One documents file with one of each skippable problem: on_error = 'skip' keeps 3 rows and counts these.
SKIP_DOCUMENTS = [
    *(json.dumps(doc) for doc in DOCS),
    json.dumps({"id": "e1", "text": ""}),
    json.dumps({"id": "e2", "text": "  "}),
    json.dumps({"id": "e3", "text": None}),
    '{"id": "e4", "text": NaN}',
    json.dumps({"id": 1.5, "text": "x"}),
    json.dumps({"id": True, "text": "x"}),
    json.dumps({"id": ["x"], "text": "x"}),
    json.dumps({"id": "e5", "text": 42}),
    json.dumps({"id": "e6", "text": "x", "labels": 7}),
    json.dumps({"id": "d1", "text": "duplicate"}),
    '{"id": "e7", "text": ',
    '["not", "an", "object"]',
    json.dumps({"id": "e8"}),
]
SKIP_DOCUMENT_COUNTS = {"empty_text": 2, "missing_text": 3, "bad_id": 3, "wrong_type": 2, "duplicate_id": 1}
SKIP_DOCUMENT_COUNTS |= {"bad_json": 2, "bad_utf8": 1, "unknown_label": 2}


def skip_documents() -> bytes:
    """SKIP_DOCUMENTS plus one invalid UTF-8 line and a kept row with two unknown label ids."""
    tail = json.dumps({"id": "d4", "text": "kept", "labels": ["audio", "nope", "nada"]})
    return ("\n".join(SKIP_DOCUMENTS) + "\n").encode() + b'{"id": "e9", "text": "\xff"}\n' + tail.encode() + b"\n"
