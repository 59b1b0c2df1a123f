"""The transformers judge: prefix reuse (shared key/value cache) gives the same scores as full prompts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from eztag.judges import judgment_from_classes
from eztag.judges.transformers import TransformersJudge
from eztag.prompts import Pair, PromptTemplate

DOCUMENTS = (
    "A media player for audio and video files, with playlists and subtitles",
    "Chess game with a graphical board",
    "A C compiler and linker for embedded systems",
)
LABELS = (("Audio", "Media"), ("Video", ""), ("Games and entertainment", "Use"), ("Software development", "Devel"))
PAIRS = [Pair(document, label, description) for document in DOCUMENTS for label, description in LABELS]


def assert_prefix_reuse_matches_naive(judge: TransformersJudge, pairs: list[Pair]) -> None:
    judge.prefix_reuse = True
    reused = judge.score(pairs)
    judge.prefix_reuse = False
    naive = judge.score(pairs)
    for fast, full in zip(reused, naive, strict=True):
        assert fast.failure is None and full.failure is None
        assert fast.score == pytest.approx(full.score, abs=1e-4)
        assert fast.log_odds == pytest.approx(full.log_odds, abs=1e-3)


@pytest.mark.parametrize("template", ["yes-no", "yes-no-short", "graded"])
def test_prefix_reuse_matches_naive_tiny_llama(tiny_llama_dir: Path, template: str) -> None:
    judge = TransformersJudge(str(tiny_llama_dir), PromptTemplate.named(template), device="cpu", batch_size=3)
    # interleaved pairs and a batch size that splits documents: groups and batches do not line up
    assert_prefix_reuse_matches_naive(judge, PAIRS[::2] + PAIRS[1::2])
    scores = [judgment.score for judgment in judge.score(PAIRS)]
    assert all(0 <= score <= 1 for score in scores) and len(set(scores)) > 1


@pytest.mark.slow
def test_prefix_reuse_matches_naive_smollm2() -> None:
    judge = TransformersJudge("default", PromptTemplate.named("yes-no", "software package"), device="cpu")
    assert judge.model_id == "default:SmolLM2-135M-Instruct.Q4_1.gguf"
    assert_prefix_reuse_matches_naive(judge, PAIRS)


def test_judgment_from_classes() -> None:
    yes, no = [math.log(0.3), math.log(0.1)], [math.log(0.2)]
    judgment = judgment_from_classes([yes, no])
    assert judgment.score == pytest.approx(0.4 / 0.6)
    assert judgment.log_odds == pytest.approx(math.log(0.4 / 0.2))
    graded = judgment_from_classes([[math.log(0.1)], [math.log(0.1)], [math.log(0.2)], [math.log(0.6)]])
    assert graded.score == pytest.approx((0.1 + 0.4 + 1.8) / 3)
    assert graded.log_odds == pytest.approx(math.log(0.8 / 0.2))
    assert judgment_from_classes([[], []]).failure.startswith("no_answer_token")
