"""Calibrators: monotone maps from the student's evidence (cosine score, optionally log rank) to P(relevant).

Fitted with scikit-learn (isotonic regression on the score, or a logistic fit on score and log rank) against
soft targets (the relevance a latent-class model of judge and student gives each judged pair, or the judge's
P(yes) as is), and saved as plain JSON — no pickle — so a calibrator file can be read, checked and applied without
scikit-learn. A calibrator records the hashes of the encoder and of the indexed label set it was fitted for; `load`
refuses it for any other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from eztag.artifacts import write_json
from eztag.config import from_dict
from eztag.encoding import EncodeConfig
from eztag.errors import EztagError
from eztag.models import resolve_encoder
from eztag.templates import render_rows

FORMAT = 1
FEATURES = ("score", "log_rank")
# the least d' by which the student's score must separate the judge's two latent classes for the views to agree
# (debtags: 1.48 with the 1.5B judge, 0.38 with SmolLM2-135M, a judge `eztag check-judge` rejects)
MIN_SEPARATION = 0.5
FIX = (
    "rerun the calibrate stage (e.g. `eztag calibrate pipelines/cold-start.toml`) and point tag.calibrator at its file"
)


@dataclasses.dataclass
class Calibrator:
    """A fitted map. isotonic: piecewise-linear through (thresholds, values), clipped at both ends (what
    sklearn's IsotonicRegression(out_of_bounds="clip").predict computes); logistic: sigmoid(coef . features +
    intercept) with features score and, when `use_rank`, log(rank) (coefficients >= 0 and <= 0: monotone)."""

    method: Literal["isotonic", "logistic"]
    use_rank: bool
    encoder_hash: str
    labels_hash: str
    thresholds: list[float] = dataclasses.field(default_factory=list)
    values: list[float] = dataclasses.field(default_factory=list)
    coef: list[float] = dataclasses.field(default_factory=list)
    intercept: float = 0.0
    format: int = FORMAT
    fitted_on: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format != FORMAT:
            raise ValueError(f"calibrator format {self.format}, this eztag reads format {FORMAT}")
        if self.method == "isotonic":
            x, y = np.asarray(self.thresholds), np.asarray(self.values)
            if self.use_rank or not len(x) or x.shape != y.shape or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
                raise ValueError("isotonic calibrator needs equal-length, non-decreasing thresholds and values")
            if y.min() < 0 or y.max() > 1:
                raise ValueError("isotonic calibrator values must lie in [0, 1]")
        elif len(self.coef) != 1 + self.use_rank or self.coef[0] < 0 or (self.use_rank and self.coef[1] > 0):
            raise ValueError(
                f"logistic calibrator needs {1 + self.use_rank} coefficients, a score coefficient >= 0 and a "
                "log-rank coefficient <= 0"
            )

    def predict(self, scores: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        """P(relevant) of each (score, 1-based rank) cell, any shape; NaN where the score is -inf (no label)."""
        scores = np.asarray(scores, dtype=np.float64)
        finite = np.isfinite(scores)
        safe = np.where(finite, scores, 0.0)
        if self.method == "isotonic":
            probability = np.interp(safe, self.thresholds, self.values)
        else:
            logit = self.intercept + self.coef[0] * safe
            if self.use_rank:
                logit = logit + self.coef[1] * np.log(np.asarray(ranks, dtype=np.float64))
            probability = 1.0 / (1.0 + np.exp(-logit))
        return np.where(finite, probability, np.nan)


def features(scores: np.ndarray, ranks: np.ndarray, use_rank: bool) -> np.ndarray:
    """The design matrix [score] or [score, log rank]."""
    columns = [np.asarray(scores, dtype=np.float64)]
    if use_rank:
        columns.append(np.log(np.asarray(ranks, dtype=np.float64)))
    return np.column_stack(columns)


def fit(
    scores: np.ndarray,
    ranks: np.ndarray,
    targets: np.ndarray,
    method: Literal["isotonic", "logistic"],
    use_rank: bool,
    identity: dict[str, str],
) -> Calibrator:
    """Fit a calibrator to soft targets in [0, 1] (e.g. the judge's P(yes)) with scikit-learn.

    The logistic fit takes each soft target t as a positive with weight t and a negative with weight 1 - t."""
    from sklearn.isotonic import IsotonicRegression

    targets = np.clip(np.asarray(targets, dtype=np.float64), 0.0, 1.0)
    if method == "isotonic":
        if use_rank:
            raise ValueError("isotonic calibration uses the score only; use_rank needs method = 'logistic'")
        model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        model.fit(np.asarray(scores, dtype=np.float64), targets)
        return Calibrator(
            method,
            False,
            thresholds=model.X_thresholds_.tolist(),
            values=model.y_thresholds_.tolist(),
            encoder_hash=identity["encoder_hash"],
            labels_hash=identity["labels_hash"],
        )
    design = features(scores, ranks, use_rank)
    coef, intercept = monotone_logistic(design, targets)
    return Calibrator(
        method,
        use_rank,
        coef=coef,
        intercept=intercept,
        encoder_hash=identity["encoder_hash"],
        labels_hash=identity["labels_hash"],
    )


def latent_class_targets(log_odds: np.ndarray, scores: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """P(relevant) of each judged pair, label-free: a two-class latent-class model of two views of the pair, the
    judge's log-odds and the student's score, each Gaussian within a class and independent of the other given the
    class (scikit-learn's GaussianMixture with diagonal covariances); the relevant class is the one the judge scores
    higher. A lenient judge's P(yes) overstates relevance; the model learns by how much from where the views agree.
    Also returns the fit: the relevant class's share, both classes' means, each view's separation of the classes
    (difference of means over the root mean variance, d'), and whether the views agree: the student, too, scores
    the relevant class higher, by at least MIN_SEPARATION (if not, the targets mean little)."""
    from sklearn.mixture import GaussianMixture

    views = np.column_stack([log_odds, scores]).astype(np.float64)
    mixture = GaussianMixture(2, covariance_type="diag", n_init=5, random_state=seed).fit(views)
    relevant = int(np.argmax(mixture.means_[:, 0]))
    other = 1 - relevant
    separation = (mixture.means_[relevant] - mixture.means_[other]) / np.sqrt(mixture.covariances_.mean(axis=0))
    summary = {
        "relevant_share": round(float(mixture.weights_[relevant]), 4),
        "means": {
            name: dict(zip(("log_odds", "score"), np.round(mixture.means_[row], 4).tolist(), strict=True))
            for name, row in (("relevant", relevant), ("other", other))
        },
        "separation": {"log_odds": round(float(separation[0]), 3), "score": round(float(separation[1]), 3)},
        "views_agree": bool(separation[1] >= MIN_SEPARATION),
    }
    return mixture.predict_proba(views)[:, relevant], summary


def monotone_logistic(design: np.ndarray, targets: np.ndarray) -> tuple[list[float], float]:
    """Logistic fit (scikit-learn) kept monotone: P rises with the score and falls with the rank. A feature whose
    coefficient comes out with the wrong sign is dropped (coefficient 0) and the rest refitted; with none left,
    the intercept is the log-odds of the mean target (the intercept-only maximum likelihood fit)."""
    from sklearn.linear_model import LogisticRegression

    signs = np.array([1.0, -1.0])[: design.shape[1]]
    kept = np.ones(design.shape[1], dtype=bool)
    coef = np.zeros(design.shape[1])
    while kept.any():
        model = LogisticRegression(C=100.0)
        model.fit(
            np.vstack([design[:, kept], design[:, kept]]),
            np.r_[np.ones(len(targets)), np.zeros(len(targets))],
            sample_weight=np.r_[targets, 1.0 - targets],
        )
        wrong = model.coef_[0] * signs[kept] < 0
        if not wrong.any():
            coef[kept] = model.coef_[0]
            return coef.tolist(), float(model.intercept_[0])
        kept[np.flatnonzero(kept)[wrong]] = False
    mean = float(np.clip(targets.mean(), 1e-6, 1 - 1e-6))
    return coef.tolist(), float(np.log(mean / (1 - mean)))


def save(calibrator: Calibrator, path: Path) -> None:
    """Write the calibrator as JSON, atomically."""
    write_json(path, dataclasses.asdict(calibrator))


def load(path: Path, identity: dict[str, str] | None = None) -> Calibrator:
    """Read a calibrator file; with `identity`, refuse one fitted for another encoder or label set."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EztagError(f"calibrator file not found; {FIX}", file=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not valid JSON"
        raise EztagError(f"corrupt calibrator ({reason}); {FIX}", file=path) from None
    if not isinstance(data, dict):
        raise EztagError(f"corrupt calibrator (not a JSON object); {FIX}", file=path)
    try:
        calibrator = from_dict(Calibrator, data, section="calibrator", file=path)
    except EztagError as error:
        raise EztagError(f"corrupt calibrator ({error.message}); {FIX}", file=path, field=error.field) from None
    if identity is not None:
        for key, what in (("encoder_hash", "encoder"), ("labels_hash", "indexed label set")):
            made_for, used = getattr(calibrator, key), identity[key]
            if made_for != used:
                raise EztagError(
                    f"calibrator was fitted for another {what} ({made_for[:12]}, this run has {used[:12]}); use the "
                    "calibrator.json of the run that made this encoder, or rerun the calibrate stage for it",
                    file=path,
                )
    return calibrator


def encoder_hash(model_dir: str) -> str:
    """SHA-256 over the model folder's files (path and bytes; README and dot-files skipped); a hub id: its name."""
    directory = Path(model_dir)
    digest = hashlib.sha256()
    if not directory.is_dir():
        digest.update(model_dir.encode())
        return digest.hexdigest()
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if not path.is_file() or path.name == "README.md" or any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(str(relative).encode() + b"\0")
        with open(path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def labels_hash(label_ids: list[str], label_texts: list[str], multi_vector: Any) -> str:
    """SHA-256 of what the index scores: label ids in index order, the texts they were encoded from, and the
    multi-vector settings (synonyms). Not the index's bytes: an HNSW index over the same vectors scores alike."""
    payload = json.dumps([label_ids, label_texts, multi_vector], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def tagging_identity(encode_config: EncodeConfig, artifacts: Mapping[str, Path], ingest_dir: Path) -> dict[str, str]:
    """The encoder hash and indexed-label-set hash of the encoder and index a run tags with: `artifacts` (a stage's
    `StageInputs.artifacts`) name the index and, when the run distils, the encoder; else the encode config's model."""
    import polars as pl

    encoder = artifacts.get("encoder")
    model = str(encoder) if encoder is not None else resolve_encoder(encode_config.model)
    index_dir = artifacts["index"]
    label_ids = pl.read_parquet(index_dir / "label_ids.parquet")["label_id"].to_list()
    labels = pl.read_parquet(ingest_dir / "labels.parquet")
    texts = dict(zip(labels["label_id"].to_list(), render_rows(labels, encode_config.label_template), strict=True))
    spec = json.loads((index_dir / "index.json").read_text())
    return {
        "encoder_hash": encoder_hash(model),
        "labels_hash": labels_hash(label_ids, [texts[label] for label in label_ids], spec.get("multi_vector")),
    }


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-width probability bins: sum over bins of (share of pairs) x |mean probability - mean target|.

    `targets` may be soft (the judge's P(yes)) or 0/1 (ground truth)."""
    probabilities, targets = np.asarray(probabilities, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(probabilities[inside].mean() - targets[inside].mean())
    return float(error)


def reliability(probabilities: np.ndarray, targets: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per non-empty bin: mean probability, mean target and count (the points of a reliability diagram)."""
    probabilities, targets = np.asarray(probabilities, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    return [
        {
            "probability": round(float(probabilities[which == b].mean()), 4),
            "observed": round(float(targets[which == b].mean()), 4),
            "count": int((which == b).sum()),
        }
        for b in range(bins)
        if (which == b).any()
    ]
