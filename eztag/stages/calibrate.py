"""Calibrate: learn P(relevant) from the student's score, label-free, from the judge's verdicts.

The judged pairs (the judge stage's and, with distil, every round's) are scored again by the encoder and index
that will tag (distil's when present), exactly as tag scores them: the pair's score and rank in the index's
top-`depth` for its document. Each pair's target is its relevance under a two-class latent-class model of the
judge's log-odds and that score (`target = "latent-class"`; or the judge's P(yes) as is, `"judge"`), and a
monotone map (eztag.calibration) from the score and rank to the target is fitted on part of the documents and
checked on the rest (expected calibration error, reliability.png). The
calibrator records the hashes of the encoder and of the indexed label set; tag refuses it for any other.
Ground truth is never read.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from eztag import calibration, plots
from eztag.artifacts import write_json, write_parquet
from eztag.embeddings import EmbeddingStore, gather_rows
from eztag.errors import EztagError
from eztag.indexing import load_index
from eztag.judging import P_YES
from eztag.stages.contract import StageInputs, no_fingerprint, no_pipeline_checks

log = logging.getLogger(__name__)

NAME = "calibrate"
HELP = "fit calibrated tag probabilities to the judge's verdicts"
REQUIRES = ("ingest", "encode", "index", "judge")
OPTIONAL = ("distil",)  # when in the pipeline: calibrate the distilled encoder (the one tag uses)
CONFLICTS: dict[str, str] = {}
PROVIDES = {"calibrator": "calibrator.json"}
PATH_FIELDS: tuple[str, ...] = ()
check_pipeline = no_pipeline_checks
fingerprint = no_fingerprint


@dataclasses.dataclass
class Config:
    """How the map is fitted and checked.

    method: "logistic-rank" (logistic on score and log rank; the best held-out fit on debtags), "logistic" (score
    only) or "isotonic" (score only; flat beyond the judged scores). `check_fraction` of the judged documents
    (drawn with `seed`) are held out to measure the fit; `min_pairs` scored pairs are needed to fit at all.
    `depth`: how deep the tagging index is searched to score a judged pair (set it to tag.k); pairs ranked below
    it are left out. `bins`: equal-width bins of the ECE and the reliability plot.
    """

    target: Literal["latent-class", "judge"] = "latent-class"
    """What the map learns: `latent-class` (each judged pair's relevance under a two-class model of the judge's
    log-odds and the student's score, Gaussian and independent within a class: it corrects a lenient judge,
    label-free; docs/calibration.md) or `judge` (the judge's P(yes) as is)."""
    method: Literal["logistic-rank", "logistic", "isotonic"] = "logistic-rank"
    """The map: `logistic-rank` (logistic on score and log rank), `logistic` (on the score) or `isotonic` (on the
    score; flat beyond the judged scores)."""
    check_fraction: float = 0.3
    """Share of the judged documents held out to check the fit (ECE, reliability plot); between 0 and 1, exclusive."""
    seed: int = 0
    """Seed of the held-out document draw."""
    min_pairs: int = 200
    """Fewest scored pairs (judged pairs ranked within `depth`) to fit at all; fewer is an error."""
    depth: int = 100
    """How deep the tagging index is searched to score a judged pair; pairs ranked below are left out. Set it to
    `tag.k`."""
    bins: int = 10
    """Equal-width bins of the ECE and the reliability plot."""

    def __post_init__(self) -> None:
        if not 0 < self.check_fraction < 1:
            raise ValueError("need 0 < check_fraction < 1")
        if self.min_pairs < 2 or self.depth < 1 or self.bins < 1:
            raise ValueError("need min_pairs >= 2, depth >= 1 and bins >= 1")


def judged_pairs(judge_dir: Path, rounds_dir: Path | None) -> pl.DataFrame:
    """Every successfully judged (doc_id, label_id, log_odds, p_yes), once: the judge stage's and distil's rounds'."""
    paths = [judge_dir / "judgments.parquet"]
    if rounds_dir is not None:
        paths += sorted(rounds_dir.glob("*/judgments.parquet"))
    frames = [pl.read_parquet(path, columns=["doc_id", "label_id", "log_odds", "failure"]) for path in paths]
    return (
        pl.concat(frames)
        .filter(pl.col("failure").is_null() & pl.col("log_odds").is_not_null())
        .select("doc_id", "label_id", "log_odds", P_YES)
        .unique(["doc_id", "label_id"], keep="first", maintain_order=True)
    )


def score_pairs(pairs: pl.DataFrame, ingest_dir: Path, encode_dir: Path, index_dir: Path, depth: int) -> pl.DataFrame:
    """`pairs` with the tagging encoder's score and rank (top-`depth` search of the index); pairs below dropped."""
    doc_ids = pl.read_parquet(ingest_dir / "documents.parquet", columns=["doc_id"])["doc_id"].to_list()
    judged = pairs["doc_id"].unique(maintain_order=True).to_list()
    row_of = {doc_id: row for row, doc_id in enumerate(doc_ids)}
    vectors = gather_rows(EmbeddingStore(encode_dir / "documents"), np.array([row_of[d] for d in judged]))
    label_ids = np.asarray(pl.read_parquet(index_dir / "label_ids.parquet")["label_id"].to_list(), dtype=object)
    scores, rows = load_index(index_dir).search(vectors, min(depth, len(label_ids)))
    doc_index, rank = np.nonzero(rows >= 0)
    retrieved = pl.DataFrame(
        {
            "doc_id": np.asarray(judged, dtype=object)[doc_index].tolist(),
            "label_id": label_ids[rows[doc_index, rank]].tolist(),
            "score": scores[doc_index, rank].astype(np.float64),
            "rank": (rank + 1).astype(np.int32),
        }
    )
    return pairs.join(retrieved, on=["doc_id", "label_id"], how="inner")


def run(config: Config, out_dir: Path, inputs: StageInputs) -> dict[str, Any]:
    """Write calibrator.json, pairs.parquet (scored pairs, split, probability), report.json, reliability.png."""
    encode_dir, index_dir = inputs.artifacts["encode"], inputs.artifacts["index"]
    judge_dir = inputs["judge"]
    judged = judged_pairs(judge_dir, inputs.artifacts.get("round_judgments"))
    pairs = score_pairs(judged, inputs["ingest"], encode_dir, index_dir, config.depth)
    documents = pairs["doc_id"].unique(maintain_order=True).to_list()
    check_count = round(config.check_fraction * len(documents))
    if pairs.height < config.min_pairs or not 0 < check_count < len(documents):
        raise EztagError(
            f"{pairs.height} judged pairs of {len(documents)} documents ranked in the top {config.depth}; "
            f"calibrate needs at least {config.min_pairs} pairs (calibrate.min_pairs) over 2 or more documents: "
            "judge more, e.g. raise mine.documents_limit (pairs = documents x mine.k)",
            file=judge_dir / "judgments.parquet",
        )
    check = set(np.random.default_rng(config.seed).choice(documents, check_count, replace=False).tolist())
    latent_class: dict[str, Any] | None = None
    if config.target == "latent-class":
        target, latent_class = calibration.latent_class_targets(
            pairs["log_odds"].to_numpy(), pairs["score"].to_numpy(), config.seed
        )
        if not latent_class["views_agree"]:
            log.warning(
                f"calibrate: the student hardly tells apart the pairs the judge finds relevant (separation "
                f"{latent_class['separation']['score']}, below {calibration.MIN_SEPARATION}); the latent-class "
                "targets and the tag counts they give mean little: check the judge first (eztag check-judge)"
            )
    else:
        target = pairs["p_yes"].to_numpy()
    pairs = pairs.with_columns(
        target=pl.Series(target, dtype=pl.Float64),
        split=pl.when(pl.col("doc_id").is_in(list(check))).then(pl.lit("check")).otherwise(pl.lit("fit")),
    )
    fit_part = pairs.filter(pl.col("split") == "fit")
    calibrator = calibration.fit(
        fit_part["score"].to_numpy(),
        fit_part["rank"].to_numpy(),
        fit_part["target"].to_numpy(),
        "isotonic" if config.method == "isotonic" else "logistic",
        config.method == "logistic-rank",
        calibration.tagging_identity(inputs.config("encode"), inputs.artifacts, inputs["ingest"]),
    )
    pairs = pairs.with_columns(
        probability=pl.Series(calibrator.predict(pairs["score"].to_numpy(), pairs["rank"].to_numpy()))
    )
    report = check_report(pairs, config.bins)
    calibrator.fitted_on = {
        "pairs": fit_part.height,
        "documents": len(documents) - check_count,
        "score_range": [
            round(float(np.min(fit_part["score"].to_numpy())), 4),
            round(float(np.max(fit_part["score"].to_numpy())), 4),
        ],
        "check_ece": report["check"]["ece"],
    }
    calibration.save(calibrator, out_dir / PROVIDES["calibrator"])
    write_parquet(out_dir / "pairs.parquet", pairs)
    report.update(method=config.method, target=config.target, judged_pairs=judged.height, pairs=pairs.height)
    report["judge_mean_p_yes"] = round(float(np.mean(pairs["p_yes"].to_numpy())), 4)
    report["latent_class"] = latent_class
    report["pairs_below_depth"] = judged.height - pairs.height
    write_json(out_dir / "report.json", report)
    held_out = pairs.filter(pl.col("split") == "check")
    figure, axes = plots.png_figure(5, 5)
    curves = {
        f"calibrator (ECE {report['check']['ece']:.3f})": report["check"]["reliability"],
        f"constant (ECE {report['check']['constant_ece']:.3f})": calibration.reliability(
            np.full(held_out.height, report["fit_mean_target"]), held_out["target"].to_numpy(), config.bins
        ),
    }
    plots.draw_reliability(axes, curves, "predicted probability (bin mean)", "mean target, held-out documents")
    plots.save_png(figure, out_dir / "reliability.png")
    return {key: value for key, value in report.items() if not isinstance(value, dict)} | {
        "check_ece": report["check"]["ece"]
    }


def check_report(pairs: pl.DataFrame, bins: int) -> dict[str, Any]:
    """On the held-out documents: ECE and Brier score of the calibrator against the targets and of the constant
    fit-set mean (a map that ignores the score), the reliability points, and the Spearman correlation of score and
    the judge's P(yes)."""
    from scipy.stats import spearmanr

    fit_mean = float(np.mean(pairs.filter(pl.col("split") == "fit")["target"].to_numpy()))
    held_out = pairs.filter(pl.col("split") == "check")
    probability, target = held_out["probability"].to_numpy(), held_out["target"].to_numpy()
    constant = np.full(len(target), fit_mean)
    correlation = spearmanr(pairs["score"].to_numpy(), pairs["p_yes"].to_numpy()).statistic
    return {
        "fit_mean_target": round(fit_mean, 4),
        "spearman_score_p_yes": round(float(correlation), 4) if np.isfinite(correlation) else None,
        "documents": {
            "fit": pairs.filter(pl.col("split") == "fit")["doc_id"].n_unique(),
            "check": held_out["doc_id"].n_unique(),
        },
        "check": {
            "pairs": held_out.height,
            "ece": round(calibration.expected_calibration_error(probability, target, bins), 4),
            "constant_ece": round(calibration.expected_calibration_error(constant, target, bins), 4),
            "brier": round(float(np.mean((probability - target) ** 2)), 5),
            "constant_brier": round(float(np.mean((constant - target) ** 2)), 5),
            "reliability": calibration.reliability(probability, target, bins),
        },
    }
