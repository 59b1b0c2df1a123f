"""Backends come from one small registry per kind; their options are typed, and a bad one is a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest

from eztag.encoders import ENCODERS
from eztag.errors import EztagError
from eztag.indexes import INDEXES
from eztag.indexes.exact import ExactIndex
from eztag.judges import JUDGES
from tests.conftest import assert_one_line_error, eztag, pipeline_file


def test_every_registered_backend_imports_and_is_a_class() -> None:
    for registry in (ENCODERS, INDEXES, JUDGES):
        for name in registry:
            assert isinstance(registry.get(name), type), (registry.kind, name)


def test_options_are_checked_and_typed() -> None:
    assert INDEXES.check_options("exact", {"query_batch_size": 8, "device": "cpu"}, field="index.options") == {
        "query_batch_size": 8,
        "device": "cpu",
    }
    assert JUDGES.check_options("openai", {"timeout": 5}, field="judge.options") == {"timeout": 5.0}
    with pytest.raises(EztagError) as error:
        INDEXES.check_options("faiss", {"ef_serch": 64}, field="index.options")
    assert error.value.message == "unknown option 'ef_serch' for index backend 'faiss' (did you mean 'ef_search'?)"
    with pytest.raises(EztagError) as error:
        JUDGES.check_options("transformers", {"batch_size": "32"}, field="judge.options")
    assert error.value.field == "judge.options.batch_size" and "expected int, got str '32'" in error.value.message
    with pytest.raises(EztagError) as error:
        JUDGES.check_options("transformers", {"precision": "fp16"}, field="judge.options")
    assert error.value.field == "judge.options.precision" and "unknown precision 'fp16'" in error.value.message


def test_a_constructor_bug_is_not_reported_as_a_bad_option(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: ExactIndex, *, device: str = "auto") -> None:
        raise TypeError("a bug inside the backend")

    monkeypatch.setattr(ExactIndex, "__init__", broken)
    with pytest.raises(TypeError, match="a bug inside the backend"):
        INDEXES.create("exact", options={"device": "cpu"}, field="index.options")


@pytest.mark.parametrize(
    ("table", "fragments"),
    [
        (
            "[index.options]\nfactory = 'HNSW32'\n",
            ("field 'index.options'", "unknown option 'factory' for index backend 'exact'"),
        ),
        (
            "[index]\nbackend = 'faiss'\n[index.options]\nef_serch = 64\n",
            ("unknown option 'ef_serch' for index backend 'faiss'", "did you mean 'ef_search'"),
        ),
        ("[index]\nbackend = 'exct'\n", ("unknown index backend 'exct'", "did you mean 'exact'")),
        (
            "[index]\nbackend = 'faiss'\nprecision = 'float16'\n",
            ("index.options.precision", "'float16' is not allowed (expected one of: auto)"),
        ),
    ],
)
def test_bad_index_options_in_a_pipeline_are_one_line(
    tmp_path: Path, small_inputs: tuple[Path, Path], table: str, fragments: tuple[str, ...]
) -> None:
    config = pipeline_file(tmp_path, *small_inputs, extra=table)
    assert_one_line_error(eztag("run", str(config)), str(config), *fragments)


def test_bad_judge_option_fails_when_the_pipeline_loads(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    stages = '"ingest", "encode", "index", "mine", "judge"'
    config = pipeline_file(tmp_path, *small_inputs, extra="[judge.options]\nbatchsize = 8\n", stages=stages)
    result = eztag("run", str(config))
    assert_one_line_error(result, "unknown option 'batchsize' for judge backend 'transformers'", "'batch_size'")
    assert "[ingest]" not in result.stdout  # nothing ran
