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
    """Most training rounds; round r trains round r-1's model (round 0: `[encode] model`), re-mines and re-judges."""
    holdout: float = 0.2
    """Share of the mined documents (at least one) never trained on; the judge's verdicts on the student's top-5 of
    these give the label-free round scores."""
    seed: int = 0
    """Seed of the held-out draw and of training."""
    min_improvement: float = 0.0
    """Rounds stop when the label-free score, the mean of LLM-P@1 and LLM-P@5 on the held-out documents, improves on
    the best round so far by no more than this; the best round (round 0 included) is kept."""
    verdict_threshold: float = 0.5
    """The judge says yes to a pair when P(yes) (P(grade >= 2) with the graded template) is at least this; between 0
    and 1, exclusive."""
    teacher: Literal["log_odds", "score", "combined"] = "combined"
    """The teacher signal per judged pair: `log_odds` (the judge's), `score` (P(yes), or expected grade / 3) or
    `combined` (`teacher_weight` * z(log-odds) + (1 - `teacher_weight`) * z(student score), z over each document's
    candidates)."""
    teacher_weight: float = 0.5
    """The judge's share of the `combined` teacher, 0 to 1 (0: self-training on the student's own scores)."""
    positives: Literal["top", "threshold"] = "top"
    """Which candidates are positives: `top` (the `top_m` best by the teacher) or `threshold` (teacher score >=
    `threshold`)."""
    top_m: int = 1
    """Positives per document with `positives = "top"`."""
    threshold: float = 0.0
    """Teacher score a positive needs with `positives = "threshold"`, on the teacher's scale."""
    max_positives: int = 3
    """Most positives per document; each makes one training row."""
    list_size: int = 8
    """Labels in a training row's list, at least 3: the positive and the `list_size` - 1 non-positive candidates the
    student ranks highest (hard negatives); a document with fewer such candidates is skipped."""
    contrastive: Literal["mnrl", "cached-mnrl"] = "mnrl"
    """Contrastive loss over in-batch and hard negatives: `mnrl` (MultipleNegativesRankingLoss) or `cached-mnrl` (its
    cached variant, in `mini_batch_size` pieces: larger batches in less memory)."""
    contrastive_weight: float = 1.0
    """Weight of the contrastive loss (0: off; not 0 together with `distillation_weight`)."""
    distillation: Literal["kl", "margin-mse"] = "kl"
    """Distillation loss over each row's list: `kl` (KL(teacher ‖ student) of the softmaxed scores) or `margin-mse`
    (MarginMSELoss on the same scale)."""
    distillation_weight: float = 1.0
    """Weight of the distillation loss (0: off)."""
    symmetric: bool = False
    """Add the label -> document direction to the contrastive loss."""
    temperature: float = 0.05
    """Divides the student's cosine similarities (the MNRL scale is 1 / `temperature`; the student side of the KL)."""
    teacher_temperature: float = 1.0
    """Divides the teacher scores in the distillation loss."""
    epochs: float = 1.0
    """Training epochs per round (over that round's training rows)."""
    max_steps: int = -1
    """Training steps per round; when positive it overrides `epochs` (-1: `epochs` decide)."""
    batch_size: int = 16
    """Training rows per step."""
    mini_batch_size: int = 16
    """Rows per forward pass of `cached-mnrl` (unused with `mnrl`)."""
    learning_rate: float = 2e-5
    """Peak learning rate."""
    warmup_ratio: float = 0.1
    """Share (below 1) of each round's training steps spent warming the learning rate up."""
    batch_sampler: Literal["no_duplicates", "batch_sampler"] = "no_duplicates"
    """`no_duplicates` keeps a text from appearing twice in a batch, so in-batch negatives are true negatives;
    `batch_sampler`: plain batches."""
    save_steps: int = 50
    """Checkpoint every this many steps into `rounds/round-N/checkpoints/`; a killed run resumes from the newest."""
    device: str = "auto"
    """Training device: `cpu`, `cuda` or `cuda:N`; `auto`: the first CUDA GPU when there is one, else the CPU."""
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """`bfloat16` (mixed precision) or `float32`; `auto`: bfloat16 on a GPU, float32 on the CPU."""

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
