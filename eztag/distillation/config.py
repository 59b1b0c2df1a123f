"""The distil stage's configuration (`[distil]`): teacher signal, training rows, losses, schedule and rounds."""

from __future__ import annotations

import dataclasses
from typing import Literal

from eztag.devices import check_device


@dataclasses.dataclass
class DistilConfig:
    """Teacher signal, training rows, losses, training schedule and rounds.

    teacher: "log_odds", "score" (the judge's score: P(yes), or expected grade / 3), or "combined" =
    teacher_weight * z(log-odds) + (1 - teacher_weight) * z(student retrieval score), z-normalised over each
    document's candidates. Positives: the `top_m` best by the teacher ("top") or those with teacher >= `threshold`
    ("threshold"), at most `max_positives`; each positive makes one row with the document's `list_size - 1`
    non-positive candidates the student ranks highest (hard negatives). `temperature` divides the student's cosine
    similarities (MNRL scale, KL); `teacher_temperature` divides the teacher scores in the KL.
    """

    rounds: int = 2
    holdout: float = 0.2
    seed: int = 0
    min_improvement: float = 0.0
    verdict_threshold: float = 0.5
    teacher: Literal["log_odds", "score", "combined"] = "combined"
    teacher_weight: float = 0.5
    positives: Literal["top", "threshold"] = "top"
    top_m: int = 1
    threshold: float = 0.0
    max_positives: int = 3
    list_size: int = 8
    contrastive: Literal["mnrl", "cached-mnrl"] = "mnrl"
    contrastive_weight: float = 1.0
    distillation: Literal["kl", "margin-mse"] = "kl"
    distillation_weight: float = 1.0
    symmetric: bool = False
    temperature: float = 0.05
    teacher_temperature: float = 1.0
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 16
    mini_batch_size: int = 16
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    batch_sampler: Literal["no_duplicates", "batch_sampler"] = "no_duplicates"
    save_steps: int = 50
    device: str = "auto"
    precision: Literal["auto", "float32", "bfloat16"] = "auto"

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.top_m < 1 or self.max_positives < 1 or self.list_size < 3:
            raise ValueError("need rounds >= 1, top_m >= 1, max_positives >= 1 and list_size >= 3")
        if not 0 < self.holdout < 1 or not 0 <= self.teacher_weight <= 1 or not 0 < self.verdict_threshold < 1:
            raise ValueError("need 0 < holdout < 1, 0 <= teacher_weight <= 1 and 0 < verdict_threshold < 1")
        if min(self.contrastive_weight, self.distillation_weight) < 0 or not (
            self.contrastive_weight or self.distillation_weight
        ):
            raise ValueError("loss weights must be >= 0 and not both 0")
        if min(self.temperature, self.teacher_temperature, self.learning_rate, self.batch_size) <= 0:
            raise ValueError("temperatures, learning_rate and batch_size must be positive")
        check_device(self.device, field="distil.device")
