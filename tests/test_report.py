"""The HTML run report, compare and the run command's summary: real runs (real encoder and a tiny real LLM judge),
the page's numbers against metrics.json, escaping, and the page opened in a real headless Chromium."""

from __future__ import annotations

import html.parser
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from eztag import comparison
from eztag.report import MAX_PANELS
from tests.conftest import assert_one_line_error, eztag, run_cli, write_jsonl
from tests.support.browser import Browser, chromium

pytestmark = pytest.mark.xdist_group("report")  # one worker: the module fixture runs the pipeline once


HOSTILE = '<script>alert("pwned")</script><b>bold</b> & <img src="http://example.invalid/x.png">'


class Cells(html.parser.HTMLParser):
    """The text of every element with a `data-*` attribute, keyed by that attribute's value (and data-run)."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, ...], str] = {}
        self._open: tuple[str, ...] | None = None
        self.tags: list[str] = []
        self.images: list[str] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.images += [value or "" for name, value in attrs if tag == "img" and name == "src"]
        data = {name: value or "" for name, value in attrs if name.startswith("data-")}
        if data:
            self._open = tuple(f"{name}={value}" for name, value in sorted(data.items()))
            self.cells[self._open] = ""

    def handle_data(self, data: str) -> None:
        self.text += data
        if self._open is not None:
            self.cells[self._open] += data

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def parse(page: str) -> Cells:
    cells = Cells()
    cells.feed(page)
    return cells


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    """ingest → encode → index → mine → judge (a tiny real Llama) → tag → evaluate, on documents one of which
    (and one label) holds HTML."""
    folder = tmp_path_factory.mktemp("judged")
    documents = write_jsonl(
        folder / "docs.jsonl",
        [
            {"id": "d1", "text": f"A media player for audio and video files {HOSTILE}", "labels": ["audio", "video"]},
            {"id": "d2", "text": "Play music and podcasts, supports mp3 and ogg", "labels": ["audio"]},
            {"id": "d3", "text": "A C compiler and linker for embedded systems", "labels": ["devel"]},
            {"id": "d4", "text": "Debugger for programs written in C and C++", "labels": ["devel"]},
            {"id": "d5", "text": "Chess game with a graphical board", "labels": ["game"]},
            {"id": "d6", "text": "Arcade game where you shoot asteroids", "labels": ["game", "video"]},
        ],
    )
    labels = write_jsonl(
        folder / "labels.jsonl",
        [
            {"id": "audio", "text": "Audio and music"},
            {"id": "video", "text": "Video <i>&amp; film</i>"},
            {"id": "devel", "text": "Software development and programming"},
            {"id": "game", "text": "Games"},
        ],
    )
    pipeline = folder / "pipeline.toml"
    pipeline.write_text(
        '[pipeline]\nname = "judged"\nstages = ["ingest", "encode", "index", "mine", "judge", "tag", "evaluate"]\n'
        'run_dir = "run"\n'
        f'[ingest]\ndocuments = "{documents}"\nlabels = "{labels}"\n'
        "[mine]\nk = 3\n"
        f'[judge]\nmodel = "{tiny_llama_dir}"\ndomain = "software package"\n[judge.options]\ndevice = "cpu"\n'
        "[tag]\nk = 4\n[evaluate]\nks = [1, 2, 4]\n",
        encoding="utf-8",
    )
    first = run_cli("run", str(pipeline))
    assert "report: " in first.stdout
    return folder / "run"


def files_of(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {str(path): (path.stat().st_mtime_ns, path.stat().st_size) for path in run_dir.rglob("*")}


@pytest.mark.slow
def test_page_numbers_equal_metrics_json_and_report_reads_only(judged_run: Path, tmp_path: Path) -> None:
    before = files_of(judged_run)
    out = tmp_path / "page.html"
    result = run_cli("report", str(judged_run), "--out", str(out))
    assert f"report: {out}" in result.stdout
    assert files_of(judged_run) == before  # read-only: nothing written into the run directory
    page = out.read_text(encoding="utf-8")
    cells = parse(page).cells
    data = json.loads((judged_run / "evaluate" / "metrics.json").read_text())
    assert data["ks"] == [1, 2, 4]
    for name, value in data["metrics"].items():
        assert cells[("data-metric=" + name, "data-run=run")] == f"{value:.4f}", name
    manifest = json.loads((judged_run / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"ingest", "encode", "index", "mine", "judge", "tag", "evaluate"}
    for stage, record in manifest["stages"].items():
        assert cells[(f"data-stage-seconds={stage}",)] == f"{record['seconds']:.1f}"
    # head/torso/tail recall at the largest k is the share of gold pairs found: R@4 is 1.0 when every
    # document's gold labels are among its 4 tags (4 labels in all)
    assert {cells[(f"data-group={group}", "data-k=4")] for group in ("head", "torso", "tail")} == {"1.0000"}
    assert "<svg" not in page and page.count('src="data:image/svg+xml;base64,') >= 5
    for section in ('id="pipeline"', 'id="metrics"', 'id="labels"', 'id="coverage"', 'id="judge"', 'id="documents"'):
        assert section in page
    assert "No calibrate stage in this run." in page and "reliability" in page


@pytest.mark.slow
def test_document_and_label_html_render_escaped(judged_run: Path, tmp_path: Path) -> None:
    page = (judged_run / "report.html").read_text(encoding="utf-8")
    parsed = parse(page)
    assert "script" not in parsed.tags and "i" not in parsed.tags
    assert parsed.images and all(src.startswith("data:image/svg+xml;base64,") for src in parsed.images)
    assert HOSTILE in parsed.text and "Video <i>&amp; film</i>" in parsed.text  # shown as text, as written
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt; &amp; &lt;img" in page
    assert "Video &lt;i&gt;&amp;amp; film&lt;/i&gt;" in page


@pytest.mark.slow
def test_page_opens_in_chromium_without_network_or_console_errors(judged_run: Path, tmp_path: Path) -> None:
    executable = chromium()
    if executable is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    control = tmp_path / "control.html"
    control.write_text('<img src="http://127.0.0.1:9/x.png"><script>console.error("control")</script>')
    browser = Browser(executable)
    try:
        # the checks can fail: a page that loads something and logs an error is caught
        caught = browser.visit(control.as_uri(), tmp_path / "control.png")
        visit = browser.visit((judged_run / "report.html").as_uri(), tmp_path / "report.png")
    finally:
        browser.close()
    assert caught.requests == ["http://127.0.0.1:9/x.png"] and "control" in caught.console_errors
    assert visit.requests == [] and visit.console_errors == []
    screenshot = (tmp_path / "report.png").read_bytes()
    assert screenshot[:8] == b"\x89PNG\r\n\x1a\n"
    height = int.from_bytes(screenshot[20:24], "big")
    assert height > 1500  # the whole page, not one screen
    shutil.copy(tmp_path / "report.png", judged_run.parent / "report-screenshot.png")


@pytest.mark.slow
def test_second_run_prints_the_metrics_table(judged_run: Path) -> None:
    again = run_cli("run", str(judged_run.parent / "pipeline.toml"))
    assert again.stdout.count("up to date, skipped") == 7
    metrics = json.loads((judged_run / "evaluate" / "metrics.json").read_text())["metrics"]
    assert f"| run | P | {metrics['P@1']:.4f} | {metrics['P@2']:.4f} | {metrics['P@4']:.4f} |" in again.stdout


@pytest.mark.slow
def test_compare_keeps_runs_with_the_same_folder_name(judged_run: Path, tmp_path: Path) -> None:
    for parent in ("a", "b"):
        shutil.copytree(judged_run, tmp_path / parent / "run")
    result = run_cli("compare", str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"), "--out", str(tmp_path / "c"))
    rows = [line for line in result.stdout.splitlines() if line.startswith("| a/run | ") or line.startswith("| b/run")]
    agreement = [row for row in rows if " | overlap | " in row or " | same | " in row]
    moves = [row for row in rows if row.endswith(" | - | - |")]  # a copy moves no label
    gold_labels = pl.read_parquet(judged_run / "ingest" / "ground_truth.parquet")["label_id"].n_unique()
    assert moves == [f"| b/run | 0 | 0 | {gold_labels} | - | - |"]
    table = [row for row in rows if "[" not in row and row not in agreement + moves]
    intervals = [row for row in rows if "[" in row]
    assert len(table) == 12  # five metrics for each run, then each run's selected tags
    set_metrics = json.loads((judged_run / "evaluate" / "metrics.json").read_text(encoding="utf-8"))["set_metrics"]
    selected = comparison.set_table({"a/run": set_metrics, "b/run": set_metrics}).splitlines()[2:]
    assert table[-2:] == selected
    ones = " | ".join(["1.0000"] * 3)  # a copy's ranked lists are the baseline's
    tagged = pl.read_parquet(judged_run / "tag" / "tags.parquet")["doc_id"].n_unique()
    assert agreement == [f"| b/run | {tagged} | {measure} | {ones} |" for measure in ("overlap", "same")]
    zero = " | ".join(["+0.0000 [+0.0000, +0.0000]"] * 3)  # b/run is a copy of the baseline a/run
    assert intervals == [f"| b/run | {metric} | {zero} |" for metric in ("P", "R", "nDCG", "PSP")] + [
        "| b/run | +0.0000 [+0.0000, +0.0000] |"  # example_F1
    ]
    cells = parse((tmp_path / "c" / "comparison.html").read_text(encoding="utf-8")).cells
    assert cells[("data-metric=P@1", "data-run=a/run")] == cells[("data-metric=P@1", "data-run=b/run")]
    assert (tmp_path / "c" / "recall_at_k.png").read_bytes()[:4] == b"\x89PNG"
    same = eztag("compare", str(tmp_path / "a" / "run"), str(tmp_path / "a" / "run"), "--out", str(tmp_path / "d"))
    assert_one_line_error(same, "run directory given twice")


def test_a_comparison_of_many_runs_draws_the_first_side_by_side_and_tables_them_all(
    judged_run: Path, tmp_path: Path
) -> None:
    names = [f"r{i}" for i in range(MAX_PANELS + 2)]
    for name in names:
        shutil.copytree(judged_run, tmp_path / name)
    pages = {}
    for count in (2, MAX_PANELS, len(names)):
        run_cli("compare", *(str(tmp_path / name) for name in names[:count]), "--out", str(tmp_path / f"c{count}"))
        pages[count] = parse((tmp_path / f"c{count}" / "comparison.html").read_text(encoding="utf-8"))
    every = pages[len(names)]
    runs = {item for key in every.cells for item in key if item.startswith("data-run=")}
    assert runs == {f"data-run={name}" for name in names}
    per_run = (len(pages[MAX_PANELS].images) - len(pages[2].images)) / (MAX_PANELS - 2)
    assert per_run >= 2 and len(every.images) == len(pages[MAX_PANELS].images)  # no panels past the first six
    assert f"{len(names)} runs: the tables below cover them all" in every.text
    assert "the tables below cover them all" not in pages[MAX_PANELS].text


@pytest.mark.slow
def test_psp_propensities_from_a_label_frequency_file(judged_run: Path, tmp_path: Path) -> None:
    pipeline = judged_run.parent / "pipeline.toml"
    default = json.loads((judged_run / "evaluate" / "metrics.json").read_text())
    assert default["propensity"] == {"source": "evaluated", "documents": 6}
    run_dir = tmp_path / "run"
    shutil.copytree(judged_run, run_dir)
    # the evaluated documents' own ground truth as the training file: the same propensities, the same PSP
    same = write_jsonl(
        tmp_path / "same.jsonl",
        [
            {"doc_id": f"d{i}", "label_id": label}
            for i, labels in enumerate(
                [["audio", "video"], ["audio"], ["devel"], ["devel"], ["game"], ["game", "video"]], start=1
            )
            for label in labels
        ],
    )
    args = ("evaluate", str(pipeline), "--run-dir", str(run_dir))
    run_cli(*args, "--set", f'evaluate.label_frequencies="{same}"')
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert metrics["propensity"] == {"source": str(same), "kind": "pairs", "documents": 6, "unknown_labels": 0}
    assert metrics["metrics"] == default["metrics"]
    # training counts where "game" is very common and the rest rare: PSP changes, P does not
    counts = tmp_path / "counts.csv"
    counts.write_text("label_id,count\ngame,900\naudio,3\nvideo,2\ndevel,1\nunused,5\n")
    run_cli(
        *args, "--set", f'evaluate.label_frequencies="{counts}"', "--set", "evaluate.label_frequency_documents=1000"
    )
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert metrics["propensity"] == {"source": str(counts), "kind": "counts", "documents": 1000, "unknown_labels": 1}
    assert metrics["metrics"]["P@1"] == default["metrics"]["P@1"]
    assert metrics["metrics"]["PSP@1"] != default["metrics"]["PSP@1"]
    missing = eztag(*args, "--set", f'evaluate.label_frequencies="{counts}"')
    assert_one_line_error(missing, "evaluate.label_frequency_documents", "number of training documents")


def test_report_of_a_folder_that_is_no_run_is_a_one_line_error(tmp_path: Path) -> None:
    result = eztag("report", str(tmp_path), "--out", str(tmp_path / "page.html"))
    assert_one_line_error(result, str(tmp_path), "not a run directory")
    assert not (tmp_path / "page.html").exists()
