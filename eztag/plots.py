"""Every plot eztag draws, in one place: the stages write them as PNG files, the report embeds them as SVG.

A plot is a `draw_*` function that fills a matplotlib Axes; `png_figure` + `save_png` make a stage's file,
`svg_figure` + `svg_uri` a report's image, so a histogram or a curve looks the same wherever it is drawn.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eztag.artifacts import atomic_path


def png_figure(width: float, height: float) -> tuple[Any, Any]:
    """(figure, axes) for a stage's PNG file (matplotlib's Agg backend, 120 dpi)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=120)


def save_png(figure: Any, path: Path) -> None:
    """Write `figure` to `path` atomically as a PNG, and free it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def svg_figure(width: float = 5.2, height: float = 3.4) -> tuple[Any, Any]:
    """(figure, axes) for a report image: deterministic SVG bytes, text as paths, a light grid."""
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "eztag"
    matplotlib.rcParams["svg.fonttype"] = "path"
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    axes = figure.subplots()
    axes.grid(True, alpha=0.3)
    return figure, axes


def svg_uri(figure: Any) -> str:
    """A figure as an SVG data URI (no date, no external fonts)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def draw_log_odds(axes: Any, values: np.ndarray) -> None:
    """Histogram of the judge's log-odds, 0 (P(yes) = P(no)) marked."""
    axes.hist(values, bins=40)
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel("log P(yes) - log P(no)")
    axes.set_ylabel("pairs")


def draw_histogram(axes: Any, values: np.ndarray, xlabel: str, ylabel: str) -> None:
    """Histogram of `values` in 40 bins."""
    axes.hist(values, bins=40)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)


def draw_counts(axes: Any, counts: Mapping[int, int], xlabel: str, ylabel: str) -> None:
    """One bar per integer value (`counts`: value -> how often)."""
    axes.bar(list(counts), list(counts.values()), width=0.8)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.xaxis.get_major_locator().set_params(integer=True)


def draw_recall_curves(axes: Any, curves: Mapping[str, Sequence[float]]) -> None:
    """recall@k for k = 1 … the length of each run's curve, one line per run."""
    for name, curve in curves.items():
        axes.plot(np.arange(1, len(curve) + 1), curve, label=name)
    axes.set_xscale("log")
    axes.set_xlabel("k")
    axes.set_ylabel("recall@k")
    axes.set_ylim(0, 1)
    axes.grid(True, alpha=0.3)
    axes.legend()


def draw_reliability(
    axes: Any,
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    xlabel: str,
    ylabel: str,
    x: str = "probability",
    y: str = "observed",
    sized: bool = False,
) -> None:
    """Reliability diagram: each curve's bins (rows with the fields `x`, predicted, and `y`, observed; e.g.
    `eztag.calibration.reliability`'s) beside the diagonal of perfect calibration; `sized`: marker areas follow
    each bin's `count`."""
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--", label="perfect")
    for name, rows in curves.items():
        xs, ys = [row[x] for row in rows], [row[y] for row in rows]
        if sized:
            largest = max(row["count"] for row in rows)
            axes.plot(xs, ys, linewidth=1)
            axes.scatter(xs, ys, s=[max(10.0, 200 * row["count"] / largest) for row in rows], label=name)
        else:
            axes.plot(xs, ys, marker="o", label=name)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)


def draw_metrics_at_k(axes: Any, runs: Mapping[str, dict[str, Any]]) -> None:
    """P@k, R@k and nDCG@k against k, one colour per run (`runs`: name -> metrics.json)."""
    styles = {"P": "-", "R": "--", "nDCG": ":"}
    for index, (name, metrics) in enumerate(runs.items()):
        ks = metrics["ks"]
        for metric, style in styles.items():
            values = [metrics["metrics"][f"{metric}@{k}"] for k in ks]
            axes.plot(ks, values, style, marker="o", color=f"C{index}", label=f"{metric}@k · {name}")
    axes.set_xscale("log")
    ks = sorted({k for metrics in runs.values() for k in metrics["ks"]})
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.minorticks_off()
    axes.set_xlabel("k")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))


def draw_group_recall(axes: Any, runs: Mapping[str, tuple[int, Sequence[float]]], groups: Sequence[str]) -> None:
    """recall@k of each label-frequency group, one bar per run (`runs`: name -> (k, recall per group))."""
    width = 0.8 / max(len(runs), 1)
    for index, (name, (k, values)) in enumerate(runs.items()):
        axes.bar(np.arange(len(groups)) + index * width, values, width, color=f"C{index}", label=f"{name} (R@{k})")
    axes.set_xticks(np.arange(len(groups)) + width * (len(runs) - 1) / 2, groups)
    axes.set_ylabel("recall@k of the group's gold pairs")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=8)


def draw_rounds(axes: Any, rounds: Sequence[dict[str, Any]]) -> None:
    """The label-free selection score and the top-1 agreement with the judge per distillation round."""
    numbers = [row["round"] for row in rounds]
    axes.plot(numbers, [row["selection"] for row in rounds], marker="o", label="label-free selection score")
    axes.plot(numbers, [row["top1"] for row in rounds], marker="s", label="top-1 agreement with the judge")
    axes.set_xticks(numbers)
    axes.set_xlabel("round")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=8)
