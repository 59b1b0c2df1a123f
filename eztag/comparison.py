"""Paired bootstrap intervals for the metric differences between evaluated runs (`eztag compare`).

The evaluate stage writes `per_document.parquet`: one row per evaluated document (documents with ground truth),
with P@k, R@k, nDCG@k, PSP@k's numerator and denominator (`PSP@k:num`, `PSP@k:den`) and, when the tag stage
selected tags, example_F1. For each run against the baseline (the first run), the difference run - baseline of
every metric comes with a paired bootstrap interval from `scipy.stats.bootstrap(paired=True)`: the documents are
resampled with replacement, the same documents for both runs, and the statistic is recomputed on each resample:
the difference of the means for P, R, nDCG and example_F1, and the difference of the ratios of sums
Σ num / Σ den for PSP (PSP is not a mean of per-document values). Coverage@k counts distinct labels over all
documents, so it is not a per-document quantity and has no interval.

The percentile interval is used, not BCa: for runs that agree on every document (a metric column where they do
is common at small k) BCa's acceleration is 0/0 and its interval NaN, where the percentile interval is exactly
[0, 0]; BCa's jackknife also costs n extra evaluations over n - 1 documents each, quadratic in the number of
documents; and the mean over hundreds of documents is close to normal, where the two intervals agree. The generator
is seeded (a fresh `np.random.default_rng(SEED)` per run pair), so the output is reproducible.

Beside the metrics, each run's ranked lists (`tag/tags.parquet`) are compared with the baseline's, which needs no
ground truth: overlap@k is the mean share of a document's top-k in the baseline that the run's top-k also holds
(recall@k against the baseline: approximate against exact search, a new model against the old), same@k the share
of documents whose top-k sets are equal, over the documents both runs tagged. With ground truth, each label's found@k
(its gold documents that have it in their top k, k = 10 or the largest evaluated k below) is set against the
baseline's: how many labels gained, lost or kept theirs, and which moved most (why a run wins or loses: a change
that helps a few labels a lot can cost many others a little).

Runs must have evaluated the same documents; a run that did not (other ground truth, other documents) gets no
intervals and a one-line note instead, since the metric table compares means over different documents there. A run
whose evaluate stage predates per_document.parquet gets a note saying how to rerun it. Nothing here imports a stage.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from eztag import plots
from eztag.artifacts import write_text
from eztag.errors import EztagError

EVALUATE_DIR = "evaluate"
PER_DOCUMENT = "per_document.parquet"
MEAN_METRICS = ("P", "R", "nDCG")
TABLE_METRICS = ("P", "R", "nDCG", "PSP", "coverage")  # the rows of the metric tables
INTERVAL_METRICS = (*MEAN_METRICS, "PSP")
SET_METRIC = "example_F1"
DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
SEED = 0
METHOD = "percentile"
AGREEMENT_NOTE = (
    "overlap@k: mean share of a document's baseline top-k that the run's top-k holds; same@k: share of documents "
    "with the same top-k set."
)
MOVES_NOTE = (
    "found@{k}: a label's gold documents that have it in their top {k}; per label with ground truth, the run's "
    "against the baseline's. Most lost and gained: baseline → run, of the label's gold documents."
)
BATCH_VALUES = 1 << 23  # resampled values held at once per input array (64 MB of float64)


@dataclasses.dataclass(frozen=True)
class Interval:
    """The observed difference run - baseline and its bootstrap interval."""

    difference: float
    low: float
    high: float

    @property
    def text(self) -> str:
        """`+0.0123 [+0.0080, +0.0170]`."""
        return f"{self.difference:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


@dataclasses.dataclass(frozen=True)
class LabelMoves:
    """Labels whose found@k (gold documents with the label in their top k) a run changed against the baseline."""

    k: int
    gained: int
    lost: int
    unchanged: int  # labels with ground truth whose found@k did not move
    most_lost: list[dict[str, Any]]  # label_id, text, support, baseline, run: the largest losses first
    most_gained: list[dict[str, Any]]

    @staticmethod
    def cell(rows: list[dict[str, Any]]) -> str:
        """`Audio 222→271 of 370; …`: each label's found@k in the baseline, then in the run, of its support."""
        return "; ".join(f"{row['text']} {row['baseline']}→{row['run']} of {row['support']}" for row in rows) or "-"


@dataclasses.dataclass
class Comparison:
    """Intervals of every run against the baseline; runs without intervals are explained in `notes`."""

    baseline: str
    ks: list[int]
    resamples: int
    confidence: float
    documents: int | None  # documents the baseline evaluated (None without its per_document.parquet)
    intervals: dict[str, dict[str, Interval]]  # run name -> column ("P@5", "example_F1") -> interval
    notes: list[str]
    method: str = METHOD
    seed: int = SEED
    agreement: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # run -> overlap@k, same@k
    moves: dict[str, LabelMoves] = dataclasses.field(default_factory=dict)  # run -> its labels against the baseline

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics with intervals, in table order (the HTML page's rows)."""
        return INTERVAL_METRICS

    @property
    def agreement_note(self) -> str:
        """What overlap@k and same@k are (the HTML page's line under their table)."""
        return AGREEMENT_NOTE

    @property
    def moves_note(self) -> str:
        """What found@k and the moves are (the HTML page's line over their table)."""
        k = next(iter(self.moves.values())).k if self.moves else 10
        return MOVES_NOTE.format(k=k)

    @property
    def set_intervals(self) -> dict[str, Interval]:
        """run name -> example_F1 interval, for the runs that have one."""
        return {name: cells[SET_METRIC] for name, cells in self.intervals.items() if SET_METRIC in cells}


def mean_difference(baseline: np.ndarray, other: np.ndarray, axis: int = -1) -> np.ndarray:
    """mean(other) - mean(baseline) along `axis` (documents)."""
    return np.mean(other, axis=axis) - np.mean(baseline, axis=axis)


def ratio_difference(
    num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray, axis: int = -1
) -> np.ndarray:
    """Σ num_b / Σ den_b - Σ num_a / Σ den_a along `axis` (documents): PSP's difference."""
    return np.sum(num_b, axis=axis) / np.sum(den_b, axis=axis) - np.sum(num_a, axis=axis) / np.sum(den_a, axis=axis)


def _statistic(baseline: np.ndarray, other: np.ndarray, *, means: int, axis: int = -1) -> np.ndarray:
    """The difference other - baseline of every column; each run's array is [columns, ..., documents]: `means`
    columns averaged over the documents, then the PSP columns as the numerators' rows followed by the
    denominators' rows (ratio of sums)."""
    psp = (baseline.shape[0] - means) // 2
    return np.concatenate(
        [
            mean_difference(baseline[:means], other[:means], axis),
            ratio_difference(
                baseline[means : means + psp],
                baseline[means + psp :],
                other[means : means + psp],
                other[means + psp :],
                axis,
            ),
        ]
    )


def _seed_argument(seed: int) -> dict[str, Any]:
    """The seeded generator under the keyword this SciPy takes: `rng` from 1.15, `random_state` before."""
    from scipy import stats

    keyword = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    return {keyword: np.random.default_rng(seed)}


def paired_bootstrap(
    baseline: np.ndarray, other: np.ndarray, means: int, resamples: int, confidence: float, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(observed, low, high) of every column's difference other - baseline; both arrays are [columns, documents]
    (`means` mean columns, then PSP's numerators, then its denominators), documents resampled together in both."""
    from scipy import stats

    documents = baseline.shape[-1]
    batch = max(1, min(resamples, BATCH_VALUES // max(1, documents * baseline.shape[0])))
    result = stats.bootstrap(
        (baseline, other),
        functools.partial(_statistic, means=means),
        n_resamples=resamples,
        batch=batch,
        vectorized=True,
        paired=True,
        axis=-1,
        confidence_level=confidence,
        method=METHOD,
        **_seed_argument(seed),
    )
    observed = _statistic(baseline, other, means=means)
    interval = result.confidence_interval
    return observed, np.asarray(interval.low), np.asarray(interval.high)


def _read(run_dir: Path, name: str, notes: list[str]) -> pl.DataFrame | None:
    path = Path(run_dir) / EVALUATE_DIR / PER_DOCUMENT
    if not path.is_file():
        notes.append(
            f"{name}: no intervals: {path} is missing (evaluated by an older eztag); rerun its evaluate stage: "
            f"eztag evaluate PIPELINE.toml --run-dir {run_dir} --force evaluate (with the run's --set options)"
        )
        return None
    try:
        frame = pl.read_parquet(path)
    except Exception as error:  # a truncated or foreign file: one line naming it
        raise EztagError(f"cannot read per-document metrics: {error}".splitlines()[0], file=path) from error
    if "doc_id" not in frame.columns or frame["doc_id"].n_unique() != frame.height:
        raise EztagError("expected one row per doc_id", file=path)
    return frame.sort("doc_id")


def _tags(run_dir: Path) -> pl.DataFrame | None:
    """The run's ranked lists (doc_id, rank, label_id); None without tag/tags.parquet."""
    path = Path(run_dir) / "tag" / "tags.parquet"
    return pl.read_parquet(path, columns=["doc_id", "rank", "label_id"]) if path.is_file() else None


def top_k_agreement(baseline: Path, other: Path, ks: Sequence[int]) -> dict[str, float] | None:
    """overlap@k and same@k of `other`'s ranked lists against `baseline`'s over the documents both tagged, and
    their count (`documents`); None when either run has no tag/tags.parquet."""
    base, run = _tags(baseline), _tags(other)
    return None if base is None or run is None else _agreement(base, run, ks)


def _agreement(base: pl.DataFrame, run: pl.DataFrame, ks: Sequence[int]) -> dict[str, float]:
    """`top_k_agreement` of two runs' ranked lists."""
    documents = base.select("doc_id").unique().join(run.select("doc_id").unique(), on="doc_id")
    result = {"documents": float(documents.height)}
    for k in ks:
        top = [frame.filter(pl.col("rank") <= k).join(documents, on="doc_id") for frame in (base, run)]
        sizes = [
            frame.group_by("doc_id").agg(pl.len().alias(name)) for frame, name in zip(top, ("a", "b"), strict=True)
        ]
        shared = top[0].join(top[1], on=["doc_id", "label_id"]).group_by("doc_id").agg(pl.len().alias("shared"))
        counts = sizes[0].join(sizes[1], on="doc_id").join(shared, on="doc_id", how="left").fill_null(0)
        shared_count, base_count, run_count = (counts[column].to_numpy() for column in ("shared", "a", "b"))
        empty = len(base_count) == 0
        result[f"overlap@{k}"] = 0.0 if empty else float(np.mean(shared_count / base_count))
        result[f"same@{k}"] = 0.0 if empty else float(np.mean((shared_count == base_count) & (base_count == run_count)))
    return result


def label_k(ks: Sequence[int]) -> int:
    """The cut-off of per-label results: 10 when evaluated, else the largest k below it, else the least."""
    below = [k for k in ks if k <= 10]
    return max(below) if below else min(ks)


def _ground_truth(run_dir: Path) -> pl.DataFrame | None:
    """The run's (doc_id, label_id) gold pairs, sorted; None without ground truth."""
    path = Path(run_dir) / "ingest" / "ground_truth.parquet"
    if not path.is_file():
        return None
    return pl.read_parquet(path, columns=["doc_id", "label_id"]).unique().sort("doc_id", "label_id")


def _found(run_dir: Path, gold: pl.DataFrame, tags: pl.DataFrame, k: int) -> pl.DataFrame:
    """`found_per_label` of a run directory's files."""
    texts = pl.read_parquet(Path(run_dir) / "ingest" / "labels.parquet", columns=["label_id", "text"])
    return found_per_label(gold, tags, texts, k)


def found_per_label(gold: pl.DataFrame, tags: pl.DataFrame, texts: pl.DataFrame, k: int) -> pl.DataFrame:
    """label_id, text, support (gold documents), found (those of them with the label in their top k), one row per
    label in `gold` (doc_id, label_id pairs); `tags` are the ranked lists, `texts` the labels' (label_id, text)."""
    top = tags.filter(pl.col("rank") <= k)
    found = top.join(gold, on=["doc_id", "label_id"]).group_by("label_id").agg(found=pl.len())
    return (
        gold.group_by("label_id")
        .agg(support=pl.len())
        .join(found, on="label_id", how="left")
        .join(texts, on="label_id", how="left")
        .with_columns(pl.col("found").fill_null(0).cast(pl.Int64), pl.col("support").cast(pl.Int64))
    )


def label_moves(baseline: pl.DataFrame, run: pl.DataFrame, k: int, shown: int = 3) -> LabelMoves:
    """`run`'s found@k per label against `baseline`'s (both `found_per_label`), over the baseline's labels with
    ground truth; the `shown` largest losses and gains (ties: more support first, then label_id)."""
    joined = baseline.join(run.select("label_id", run_found="found"), on="label_id", how="left").with_columns(
        change=pl.col("run_found").fill_null(0) - pl.col("found")
    )
    rows = joined.select(
        "label_id",
        "support",
        text=pl.col("text").fill_null(pl.col("label_id")),
        baseline="found",
        run=pl.col("run_found").fill_null(0),
        change="change",
    )

    def most(sign: int) -> list[dict[str, Any]]:
        moved = rows.filter(pl.col("change") * sign > 0).sort(
            [pl.col("change") * sign, "support", "label_id"], descending=[True, True, False]
        )
        return moved.head(shown).drop("change").to_dicts()

    return LabelMoves(
        k,
        int((rows["change"] > 0).sum()),
        int((rows["change"] < 0).sum()),
        int((rows["change"] == 0).sum()),
        most(-1),
        most(1),
    )


def _ranked_lists(comparison: Comparison, run_dirs: Sequence[Path], names: Sequence[str], ks: Sequence[int]) -> None:
    """Each run's ranked lists against the baseline's (each tags.parquet read once): their agreement and, over the
    same ground truth, the labels that moved."""
    base_tags = _tags(run_dirs[0])
    if base_tags is None:
        return
    base_gold = _ground_truth(run_dirs[0]) if ks else None
    base = None if base_gold is None else (base_gold, _found(run_dirs[0], base_gold, base_tags, label_k(ks)))
    for run_dir, name in zip(run_dirs[1:], names[1:], strict=True):
        tags = _tags(run_dir)
        if tags is None:
            continue
        comparison.agreement[name] = _agreement(base_tags, tags, ks)
        gold = None if base is None else _ground_truth(run_dir)
        if base is not None and gold is not None and gold.equals(base[0]):
            comparison.moves[name] = label_moves(base[1], _found(run_dir, gold, tags, label_k(ks)), label_k(ks))


def _columns(frame: pl.DataFrame, names: list[str]) -> np.ndarray:
    return frame.select(names).to_numpy().astype(np.float64).T.copy()


def compare_runs(
    run_dirs: Sequence[Path],
    names: Sequence[str],
    ks: Sequence[int],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = SEED,
) -> Comparison:
    """Every run after the first against the first: the difference of each metric at each k in `ks` (and of
    example_F1 when both runs have it) and its paired bootstrap interval. `names` name the runs in the output."""
    if resamples < 1:
        raise EztagError(f"resamples must be a positive integer, got {resamples}")
    if not 0 < confidence < 1:
        raise EztagError(f"confidence must be between 0 and 1, got {confidence}")
    notes: list[str] = []
    frames = [_read(run_dir, name, notes) for run_dir, name in zip(run_dirs, names, strict=True)]
    baseline, base_name = frames[0], names[0]
    comparison = Comparison(base_name, list(ks), resamples, confidence, None, {}, notes, seed=seed)
    _ranked_lists(comparison, run_dirs, names, ks)
    if baseline is None:
        if len(frames) > 1:
            notes.append(f"no intervals: the baseline {base_name} has no per-document metrics")
        return comparison
    comparison.documents = baseline.height
    base_path = Path(run_dirs[0]) / EVALUATE_DIR / PER_DOCUMENT
    base_ids = set(baseline["doc_id"].to_list())
    for run_dir, name, frame in zip(run_dirs[1:], names[1:], frames[1:], strict=True):
        if frame is None:
            continue
        path = Path(run_dir) / EVALUATE_DIR / PER_DOCUMENT
        ids = set(frame["doc_id"].to_list())
        if ids != base_ids:
            notes.append(
                f"{name}: no intervals: {path}: runs evaluated different documents: {len(base_ids)} in {base_name}, "
                f"{len(ids)} in {name}, {len(base_ids & ids)} in common"
            )
            continue
        means = [f"{metric}@{k}" for metric in MEAN_METRICS for k in ks]
        if SET_METRIC in baseline.columns and SET_METRIC in frame.columns:
            means.append(SET_METRIC)
        psp = [f"PSP@{k}" for k in ks]
        columns = [*means, *(f"{column}:num" for column in psp), *(f"{column}:den" for column in psp)]
        for which, table in ((base_path, baseline), (path, frame)):
            missing = [column for column in columns if column not in table.columns]
            if missing:
                raise EztagError(f"no column {missing[0]!r}: rerun the evaluate stage", file=which)
        observed, low, high = paired_bootstrap(
            _columns(baseline, columns), _columns(frame, columns), len(means), resamples, confidence, seed
        )
        comparison.intervals[name] = {
            column: Interval(float(d) + 0.0, float(lo) + 0.0, float(hi) + 0.0)  # + 0.0: no "-0.0000"
            for column, d, lo, hi in zip([*means, *psp], observed, low, high, strict=True)
        }
    return comparison


def markdown(comparison: Comparison) -> str:
    """The intervals as Markdown: a heading naming the baseline, a line on the method, one table (and one for
    example_F1), the notes, then the ranked lists' agreement. Empty when there is nothing to say (a single run)."""
    if not comparison.intervals and not comparison.notes and not comparison.agreement and not comparison.moves:
        return ""
    ks = comparison.ks
    lines: list[str] = []
    if comparison.intervals or comparison.notes:
        lines += [f"## Differences from the baseline {comparison.baseline} (paired bootstrap)", ""]
    if comparison.intervals:
        lines += [
            f"Each cell: run - {comparison.baseline} [{comparison.confidence:.0%} interval]; "
            f"{comparison.documents} documents resampled together, {comparison.resamples} resamples "
            f"({comparison.method} method, seed {comparison.seed}); PSP as a ratio of sums; coverage has no "
            "interval (not a per-document quantity).",
            "",
            "| run | metric | " + " | ".join(f"@{k}" for k in ks) + " |",
            "|---|---|" + "---:|" * len(ks),
        ]
        for name, cells in comparison.intervals.items():
            for metric in INTERVAL_METRICS:
                lines.append(f"| {name} | {metric} | " + " | ".join(cells[f"{metric}@{k}"].text for k in ks) + " |")
        if comparison.set_intervals:
            lines += ["", f"| run | {SET_METRIC} |", "|---|---:|"]
            lines += [f"| {name} | {interval.text} |" for name, interval in comparison.set_intervals.items()]
        lines.append("")
    lines += [f"Note: {note}" for note in comparison.notes]
    if comparison.agreement:
        lines += [""] if lines else []
        lines += [
            f"## Ranked lists against the baseline {comparison.baseline} (tag/tags.parquet)",
            "",
            AGREEMENT_NOTE,
            "",
            "| run | documents | measure | " + " | ".join(f"@{k}" for k in ks) + " |",
            "|---|---:|---|" + "---:|" * len(ks),
        ]
        for name, values in comparison.agreement.items():
            for measure in ("overlap", "same"):
                row = " | ".join(f"{values[f'{measure}@{k}']:.4f}" for k in ks)
                lines.append(f"| {name} | {values['documents']:.0f} | {measure} | {row} |")
    if comparison.moves:
        k = next(iter(comparison.moves.values())).k
        lines += [
            "",
            f"## Labels that moved against the baseline {comparison.baseline} (found@{k})",
            "",
            comparison.moves_note,
            "",
            "| run | gained | lost | unchanged | most lost | most gained |",
            "|---|---:|---:|---:|---|---|",
        ]
        for name, moves in comparison.moves.items():
            lines.append(
                f"| {name} | {moves.gained} | {moves.lost} | {moves.unchanged} | {moves.cell(moves.most_lost)} | "
                f"{moves.cell(moves.most_gained)} |"
            )
    return "\n".join(lines).rstrip("\n") + "\n"


def set_table(runs: dict[str, dict[str, float]]) -> str:
    """The selected tags' set metrics as Markdown, one row per run."""
    columns = ("example_F1", "micro_F1", "macro_F1", "example_P", "example_R", "tags_per_doc", "gold_per_doc")
    rows = [
        f"| {name} | " + " | ".join(f"{values[column]:.4f}" for column in columns) + " |\n"
        for name, values in runs.items()
    ]
    return "| run | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns) + "\n" + "".join(rows)


def probability_table(runs: dict[str, dict[str, Any]]) -> str:
    """Each run's calibrated probabilities against the ground truth (evaluate's check), one row per run."""
    rows = [
        f"| {name} | {checked['ece']:.4f} | {checked['expected_per_doc']:.2f} | {checked['gold_per_doc']:.2f} |\n"
        for name, checked in runs.items()
    ]
    header = "| run | ECE, first 10 tags | expected labels per document | gold labels per document |\n"
    return header + "|---|---:|---:|---:|\n" + "".join(rows)


def markdown_table(results: dict[str, dict[str, float]], ks: list[int]) -> str:
    """One row per (run, metric), one column per k."""
    lines = ["| run | metric | " + " | ".join(f"@{k}" for k in ks) + " |", "|---|---|" + "---:|" * len(ks)]
    for run_name, values in results.items():
        for metric in TABLE_METRICS:
            cells = " | ".join(f"{values[f'{metric}@{k}']:.4f}" for k in ks)
            lines.append(f"| {run_name} | {metric} | {cells} |")
    return "\n".join(lines) + "\n"


def run_names(run_dirs: list[Path]) -> list[str]:
    """A unique name per run folder: the shortest path suffix no other run shares (`a/demo`, `b/demo`)."""
    paths = [run_dir.resolve() for run_dir in run_dirs]
    if len(set(paths)) < len(paths):
        twice = next(path for path in paths if paths.count(path) > 1)
        raise EztagError("run directory given twice", file=twice)
    names = []
    for path in paths:
        others = [other for other in paths if other != path]
        depth = next(
            (n for n in range(1, len(path.parts)) if all(other.parts[-n:] != path.parts[-n:] for other in others)),
            None,
        )
        names.append("/".join(path.parts[-depth:]) if depth else str(path))
    return names


def compare(
    run_dirs: list[Path],
    out_dir: Path,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[str, Comparison]:
    """Side-by-side Markdown table, recall@k plot and paired bootstrap intervals of every run against the first
    for several finished runs; returns (the Markdown of comparison.md, the intervals)."""
    results, curves, ks, selected, probabilities = {}, {}, None, {}, {}
    names = run_names(run_dirs)
    for run_dir, name in zip(run_dirs, names, strict=True):
        path = run_dir / EVALUATE_DIR / "metrics.json"
        if not path.exists():
            raise EztagError("no metrics.json: run the evaluate stage first", file=path)
        data = json.loads(path.read_text())
        results[name], curves[name] = data["metrics"], data["recall_curve"]
        ks = [k for k in data["ks"] if ks is None or k in ks]
        if "set_metrics" in data:
            selected[name] = data["set_metrics"]
        if "probabilities" in data:
            probabilities[name] = data["probabilities"]
    table = markdown_table(results, ks or [])
    if selected:
        table += "\nSelected tags:\n\n" + set_table(selected)
    if probabilities:
        table += "\nCalibrated probabilities against the ground truth (evaluate):\n\n" + probability_table(
            probabilities
        )
    intervals = compare_runs(run_dirs, names, ks or [], resamples=resamples, confidence=confidence)
    extra = markdown(intervals)
    table += f"\n{extra}" if extra else ""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "comparison.md", table)
    figure, axes = plots.png_figure(6, 4)
    plots.draw_recall_curves(axes, curves)
    plots.save_png(figure, out_dir / "recall_at_k.png")
    return table, intervals
