"""Run reports: one self-contained HTML page per run (or several runs side by side), read from the run directory
(`eztag.run_results`) and rendered here.

The page needs no network when opened: plots are SVG embedded as data URIs (`eztag.plots`), styles are inline,
there is no script, and a Content-Security-Policy forbids loading anything else. Every text from the data is escaped
by Jinja2's autoescaping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from eztag import __version__, comparison, plots
from eztag.artifacts import write_text
from eztag.comparison import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, Comparison
from eztag.run_results import GROUPS, RunReport, read_run

MAX_PANELS = 6
"""Runs drawn side by side in a comparison page (the baseline first); its tables and curves show every run."""


def figures(runs: list[RunReport], panels: list[RunReport]) -> dict[str, object]:
    """The page's plots as SVG data URIs: metrics at k and recall curves of the evaluated runs, and for the runs
    drawn side by side (`panels`) recall by label frequency group, the selected tags per document and their scores,
    the judge's log-odds, its reliability against the ground truth, the calibrator's reliability and the
    distillation rounds."""

    def svg(draw: Callable[..., None], *args: object, width: float = 5.2, height: float = 3.4) -> str:
        figure, axes = plots.svg_figure(width, height)
        draw(axes, *args)
        return plots.svg_uri(figure)

    evaluated = {run.name: run.metrics for run in runs if run.metrics is not None}
    labelled = {
        run.name: (run.labels["k"], [run.labels["groups"][group]["recall"][run.labels["k"]] or 0 for group in GROUPS])
        for run in panels
        if run.labels is not None
    }
    curves = {name: metrics["recall_curve"] for name, metrics in evaluated.items()}
    return {
        "metrics_at_k": svg(plots.draw_metrics_at_k, evaluated, width=6.4, height=3.6) if evaluated else None,
        "recall_curve": svg(plots.draw_recall_curves, curves) if evaluated else None,
        "groups": svg(plots.draw_group_recall, labelled, GROUPS) if labelled else None,
        "tags_per_document": {
            run.name: svg(plots.draw_counts, run.tagging["tags_per_document"], "selected tags", "documents", width=4.2)
            for run in panels
            if run.tagging
        },
        "tag_scores": {
            run.name: svg(
                plots.draw_histogram,
                run.tagging["scores"] if run.tagging["probabilities"] is None else run.tagging["probabilities"],
                "score" if run.tagging["probabilities"] is None else "calibrated probability",
                "selected tags",
                width=4.2,
            )
            for run in panels
            if run.tagging and run.tagging["scores"].size
        },
        "log_odds": {run.name: svg(plots.draw_log_odds, run.judge["log_odds"]) for run in panels if run.judge},
        "reliability": {
            run.name: svg(
                plots.draw_reliability,
                {"judge": run.judge["gold"]["reliability"]},
                "mean P(yes) in bin",
                "share of pairs that are gold labels",
                "mean_p_yes",
                "gold_share",
                width=4.2,
                height=3.6,
            )
            for run in panels
            if run.judge and run.judge["gold"]
        },
        "calibration": {
            run.name: svg(
                plots.draw_reliability,
                {"calibrated (marker area: pairs)": run.judge["calibration"]["reliability"]},
                "calibrated probability",
                "observed (mean calibration target)",
                "probability",
                "observed",
                True,
                width=4.2,
                height=3.6,
            )
            for run in panels
            if run.judge and run.judge["calibration"] and run.judge["calibration"]["reliability"]
        },
        "rounds": {
            run.name: svg(plots.draw_rounds, run.distil["rounds"], width=4.8, height=3.2)
            for run in panels
            if run.distil and run.distil["rounds"]
        },
    }


def render(runs: list[RunReport], title: str, intervals: Comparison | None = None) -> str:
    """The HTML page for one or several runs; `intervals`: `eztag compare`'s differences from the first run."""
    import jinja2

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True)
    environment.filters["num"] = lambda value, digits=4: "-" if value is None else f"{value:.{digits}f}"
    template = environment.from_string(resources.files("eztag").joinpath("report.html.j2").read_text("utf-8"))
    evaluated = [run for run in runs if run.metrics]
    evaluated_ks = [run.metrics["ks"] for run in evaluated if run.metrics is not None]
    ks = [k for k in evaluated_ks[0] if all(k in other for other in evaluated_ks)] if evaluated_ks else []
    return template.render(
        title=title,
        runs=runs,
        panels=runs[:MAX_PANELS],
        ks=ks,
        table_metrics=comparison.TABLE_METRICS,
        plots=figures(runs, runs[:MAX_PANELS]),
        groups=GROUPS,
        intervals=intervals,
        version=__version__,
        generated=time.strftime("%Y-%m-%d %H:%M:%S %z"),
    )


def write_report(run_dir: Path, out: Path) -> Path:
    """Write the page of one run to `out`."""
    run = read_run(run_dir)
    write_text(out, render([run], f"eztag report: {run.name}"))
    return out


def write_comparison(
    run_dirs: list[Path],
    out_dir: Path,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
) -> str:
    """comparison.md, recall_at_k.png and comparison.html for several runs, with paired bootstrap intervals against
    the first run; returns the Markdown (the metric table, then the intervals)."""
    table, intervals = comparison.compare(run_dirs, out_dir, resamples, confidence)
    names = comparison.run_names(run_dirs)
    runs = [
        read_run(run_dir, name, details=place < MAX_PANELS)
        for place, (run_dir, name) in enumerate(zip(run_dirs, names, strict=True))
    ]
    title = "eztag comparison: " + ", ".join(run.name for run in runs)
    write_text(out_dir / "comparison.html", render(runs, title, intervals))
    return table
