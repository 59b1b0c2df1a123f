"""`eztag prune-cache`: the label and index caches lose the entries no run has used for a while, never one a run
uses, and never anything in a folder eztag did not make a cache."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from eztag.entry_caches import LOCK, prune
from eztag.pipeline import Pipeline
from tests.conftest import assert_one_line_error, eztag, pipeline_file, run_cli
from tests.support.locks import folders, waited_for

OTHER_TEMPLATE = "encode.label_template='{text}: {description}'"


def caching_pipeline(tmp_path: Path, small_inputs: tuple[Path, Path]) -> Path:
    """Ingest, encode, exact index and tag over the small inputs, with a label cache and an index cache."""
    extra = f'label_cache = "{tmp_path / "labels"}"\n[index]\ncache = "{tmp_path / "indexes"}"\n'
    return pipeline_file(tmp_path, *small_inputs, extra=extra, stages='"ingest", "encode", "index", "tag"')


def age(cache: Path, days: float) -> None:
    """Every entry of `cache` last used `days` days ago."""
    then = time.time() - days * 86_400
    for path in cache.iterdir():
        if path.is_dir():
            os.utime(path, (then, then))


def file_bytes(folder: Path) -> int:
    """The bytes of every file under `folder`."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def test_prune_removes_the_entries_no_run_used_and_keeps_what_runs_take(
    tmp_path: Path, small_inputs: tuple[Path, Path]
) -> None:
    pipeline = caching_pipeline(tmp_path, small_inputs)
    Pipeline.load(pipeline).run(tmp_path / "night-1")
    first_labels, first_index = folders(tmp_path / "labels"), folders(tmp_path / "indexes")
    Pipeline.load(pipeline, [OTHER_TEMPLATE]).run(tmp_path / "night-2")
    assert len(folders(tmp_path / "labels")) == len(folders(tmp_path / "indexes")) == 2
    for cache in ("labels", "indexes"):
        age(tmp_path / cache, 10)
    night_3 = Pipeline.load(pipeline).run(tmp_path / "night-3")  # takes the first night's entries: used now
    assert night_3["encode"]["labels_from_cache"] and night_3["index"]["from_cache"]

    pruned = run_cli("prune-cache", str(tmp_path / "labels"), str(tmp_path / "indexes"), "--unused-days", "7")
    assert pruned.stdout.count("removed 1 entries") == 2 and pruned.stdout.count("kept 1") == 2, pruned.stdout
    assert folders(tmp_path / "labels") == first_labels and folders(tmp_path / "indexes") == first_index
    (digest,) = (tmp_path / "labels").glob("*.texts.parquet")  # the removed entry's digest file went with it
    assert digest.name.startswith(f"{first_labels[0]}.")
    assert [path.name for path in (tmp_path / "indexes").glob(".*.lock")] == [f".{first_index[0]}.lock", LOCK]

    night_4 = Pipeline.load(pipeline, [OTHER_TEMPLATE]).run(tmp_path / "night-4")
    assert night_4["encode"]["labels_encoded"] == 4 and not night_4["index"]["from_cache"]
    before = file_bytes(tmp_path / "labels")
    assert prune(tmp_path / "labels", 0).freed_bytes == before - file_bytes(tmp_path / "labels") > 0  # digests too
    assert folders(tmp_path / "labels") == [] and list((tmp_path / "labels").glob("*.texts.parquet")) == []


def test_prune_waits_for_the_runs_using_a_folder_and_touches_no_other_folder(
    tmp_path: Path, small_inputs: tuple[Path, Path]
) -> None:
    """Real locks held by another process: prune waits for a run using the folder (shared) and removes nothing
    meanwhile, a run waits for a prune (exclusive); each goes on once the holder is killed. A folder without eztag's
    mark is a one-line error, left as it was."""
    Pipeline.load(caching_pipeline(tmp_path, small_inputs)).run(tmp_path / "night-1")
    cache = tmp_path / "indexes"
    age(cache, 3)
    (entry,) = folders(cache)
    pruned = waited_for(cache / LOCK, "shared", ["prune-cache", str(cache), "--unused-days", "1"])
    assert "removed 1 entries" in pruned and folders(cache) == []
    night_2 = ["run", str(tmp_path / "pipeline.toml"), "--run-dir", str(tmp_path / "night-2")]
    waited_for(cache / LOCK, "exclusive", night_2)  # a run waits for a prune holding the folder
    assert json.loads((tmp_path / "night-2" / "index" / "report.json").read_text())["from_cache"] is False
    assert folders(cache) == [entry]

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "old").mkdir()
    age(tmp_path / "mine", 30)
    refused = eztag("prune-cache", str(tmp_path / "mine"), "--unused-days", "1")
    assert_one_line_error(refused, str(tmp_path / "mine"), "is not a cache folder of eztag", "nothing was removed")
    assert folders(tmp_path / "mine") == ["old"]


@pytest.mark.parametrize("days", ["-1", "inf", "soon"])
def test_unused_days_must_be_a_number_of_days(tmp_path: Path, days: str) -> None:
    result = eztag("prune-cache", str(tmp_path), "--unused-days", days)
    assert result.returncode == 2 and "expected a number of days, 0 or more" in result.stderr
