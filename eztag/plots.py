"""The plots that stages and reports draw, each written atomically as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eztag.artifacts import atomic_path


def plot_log_odds(values: np.ndarray, path: Path) -> None:
    """Histogram of the judge's log-odds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    axes.hist(values, bins=40)
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel("log P(yes) - log P(no)")
    axes.set_ylabel("pairs")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
