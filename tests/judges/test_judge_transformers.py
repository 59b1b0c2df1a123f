"""The transformers judge: its prefix-reusing paths (one document at a time, and many documents per forward) give
the naive path's scores (every prompt in full) in float32."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

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
# documents of different prefix lengths, one with a single candidate, and one prompt longer than a small token budget
MIXED = [
    *PAIRS[::2],
    Pair("Text editor", "Software development", "Devel"),
    *PAIRS[1::2],
    Pair("a terminal emulator " * 60, "Audio", "Media"),
    Pair("a terminal emulator " * 60, "Games and entertainment", ""),
]


def assert_paths_match_naive(judge: TransformersJudge, pairs: list[Pair], budgets: tuple[int, ...]) -> None:
    """Per-document and batched scoring (at each token budget) against the naive path: log-odds within 1e-4."""
    judge.scoring = "naive"
    naive = judge.score(pairs)
    assert [judgment.failure for judgment in naive] == [None] * len(pairs)
    runs = [("per-document", judge.token_budget)] + [("batched", budget) for budget in budgets]
    for judge.scoring, judge.token_budget in runs:
        for fast, full in zip(judge.score(pairs), naive, strict=True):
            assert fast.failure is None
            assert fast.log_odds == pytest.approx(full.log_odds, abs=1e-4), (judge.scoring, judge.token_budget)
            assert fast.score == pytest.approx(full.score, abs=1e-4)


@pytest.mark.parametrize("template", ["yes-no", "yes-no-short", "graded"])
def test_scoring_paths_match_naive_tiny_llama(tiny_llama_dir: Path, template: str) -> None:
    judge = TransformersJudge(str(tiny_llama_dir), PromptTemplate.named(template), device="cpu", batch_size=3)
    # interleaved pairs and a batch size that splits documents: groups and batches do not line up; budget 200 puts
    # one or two documents in a forward, splits the long one's candidates, and holds no long prompt whole
    assert_paths_match_naive(judge, MIXED, budgets=(200, 4096))
    scores = [judgment.score for judgment in judge.score(PAIRS)]
    assert all(0 <= score <= 1 for score in scores) and len(set(scores)) > 1


@pytest.mark.slow
def test_scoring_paths_match_naive_smollm2() -> None:
    judge = TransformersJudge("default", PromptTemplate.named("yes-no", "software package"), device="cpu")
    assert judge.model_id == "default:SmolLM2-135M-Instruct.Q4_1.gguf@transformers-float32"
    assert judge.settings == {
        "device": "cpu",
        "dtype": "float32",
        "scoring": "per-document",  # the CPU default
        "token_budget": None,
        "batch_size": 32,
        "cudnn_attention": True,
    }
    # the real model on documents of different prefix lengths and a single candidate (the tiny Llama also takes the
    # prompt longer than the budget: in full it is most of this test's time)
    assert_paths_match_naive(judge, MIXED[:-2], budgets=(300,))


def test_without_cudnn_attention_every_forward_runs_with_cudnn_off(tiny_llama_dir: Path) -> None:
    """`cudnn_attention = false`: each forward of the batched path and of generation runs with cuDNN's attention
    kernels off (torch's flag, read by a forward hook), the log-odds stay within 1e-4 of naive, and the flags are
    torch's again afterwards."""
    judge = TransformersJudge(str(tiny_llama_dir), PromptTemplate.named("yes-no"), device="cpu", cudnn_attention=False)
    assert judge.settings["cudnn_attention"] is False
    seen: list[bool] = []
    judge.model.register_forward_hook(lambda *_: seen.append(torch.backends.cuda.cudnn_sdp_enabled()))
    assert_paths_match_naive(judge, MIXED, budgets=(200,))
    judge.generate([[{"role": "user", "content": "Name a text editor."}]], max_new_tokens=2)
    assert len(seen) > 3 and not any(seen)
    assert torch.backends.cuda.cudnn_sdp_enabled() and torch.backends.cuda.flash_sdp_enabled()


def test_batched_packing_keeps_each_forward_within_the_token_budget(tiny_llama_dir: Path) -> None:
    """Forwards stay within the budget (pairs x padded length), but for a single prompt longer than it."""
    judge = TransformersJudge(str(tiny_llama_dir), PromptTemplate.named("yes-no"), device="cpu", scoring="batched")
    judge.token_budget = 200
    sizes: list[tuple[int, int]] = []
    forward = judge.model.forward

    def counted(*args: object, **inputs: torch.Tensor) -> object:
        sizes.append(tuple(inputs["input_ids"].shape))
        return forward(*args, **inputs)

    judge.model.forward = counted
    judge.score(MIXED)
    suffix_forwards = sizes[1::2]  # each batch: the prefixes, then the suffixes on their cache
    longest = max(len(ids) for ids in judge.prompt_ids(MIXED))
    assert longest > 200 and len(suffix_forwards) > 2
    prefix_widths = [width for _, width in sizes[0::2]]
    for (pairs, suffix_width), prefix_width in zip(suffix_forwards, prefix_widths, strict=True):
        assert pairs * (prefix_width + suffix_width) <= 200 or pairs == 1


def test_judgment_from_classes() -> None:
    yes, no = [math.log(0.3), math.log(0.1)], [math.log(0.2)]
    judgment = judgment_from_classes([yes, no])
    assert judgment.score == pytest.approx(0.4 / 0.6)
    assert judgment.log_odds == pytest.approx(math.log(0.4 / 0.2))
    graded = judgment_from_classes([[math.log(0.1)], [math.log(0.1)], [math.log(0.2)], [math.log(0.6)]])
    assert graded.score == pytest.approx((0.1 + 0.4 + 1.8) / 3)
    assert graded.log_odds == pytest.approx(math.log(0.8 / 0.2))
    assert judgment_from_classes([[], []]).failure.startswith("no_answer_token")
