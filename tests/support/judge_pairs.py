"""Real-looking (package description, debtags tag) pairs shared by the judge backend tests, and the agreement
checks of vLLM against the transformers judge on them.

Bounds, from SmolLM2-135M on these 20 pairs (P(yes) differences, max / mean), measured on an AMD EPYC with AVX512_BF16
and no AMX, where the old fixed bf16 bound (0.06 / 0.03) failed at 0.094 / 0.014:
- float32: vLLM against transformers 0.0000 / 0.0000 (the 1.5B judge: 0.0061 / 0.0013 on 200 pairs, docs/judges.md), so
  FLOAT32_MAX / FLOAT32_MEAN leave room for other kernels and nothing for a wrong prompt or answer token.
- bfloat16: each engine rounds activations its own way, so two bf16 engines are compared through float32: vLLM's
  bf16 distance from the float32 answer (0.063 / 0.018) against transformers' own bf16 distance from it, measured
  on the same pairs in the same test (0.041 / 0.017): within BF16_FACTOR_MAX / BF16_FACTOR_MEAN times that.
"""

from statistics import mean

from eztag.prompts import Pair

DOCUMENTS = (
    "vlc: multimedia player and streamer for audio and video files, DVDs and network streams",
    "gnuchess: chess engine that plays against you on a text or graphical board",
    "postfix: high-performance mail transport agent that delivers and routes e-mail",
    "gcc: the GNU C compiler, turns C source code into programs for many architectures",
)
LABELS = (
    ("Audio", "Works with sound and music"),
    ("Video", "Works with video and films"),
    ("Board games (chess, go, ...)", "Games and amusement"),
    ("Mail transport agent", "Mail"),
    ("C compiler", "Software development"),
)
PAIRS = [Pair(document, label, description) for document in DOCUMENTS for label, description in LABELS]
FLOAT32_MAX, FLOAT32_MEAN = 0.01, 0.003
BF16_FACTOR_MAX, BF16_FACTOR_MEAN = 3.0, 2.0


def differences(judgments: list, expected: list[float]) -> list[float]:
    """|P(yes) - expected| per pair, every pair scored."""
    assert [judgment.failure for judgment in judgments] == [None] * len(expected)
    return [abs(judgment.score - p_yes) for judgment, p_yes in zip(judgments, expected, strict=True)]


def assert_agree_float32(judgments: list, expected: list[float]) -> None:
    """vLLM against transformers, both in float32: the same verdicts, P(yes) within FLOAT32_MAX / FLOAT32_MEAN."""
    found = differences(judgments, expected)
    assert max(found) < FLOAT32_MAX and mean(found) < FLOAT32_MEAN, f"max {max(found):.4f}, mean {mean(found):.4f}"
    assert [judgment.score > 0.5 for judgment in judgments] == [p_yes > 0.5 for p_yes in expected]


def assert_agree_bfloat16(judgments: list, transformers_bf16: list[float], transformers_fp32: list[float]) -> None:
    """vLLM in bfloat16 no further from the float32 answer than BF16_FACTOR_* times transformers' bf16 distance from
    it on the same pairs; that distance must be a real rounding error, not a broken run (a bound that cannot fail)."""
    rounding = [abs(bf16 - fp32) for bf16, fp32 in zip(transformers_bf16, transformers_fp32, strict=True)]
    assert 0 < max(rounding) < 0.1, f"transformers bf16 vs float32: max {max(rounding):.4f}"
    found = differences(judgments, transformers_fp32)
    bound_max, bound_mean = BF16_FACTOR_MAX * max(rounding), BF16_FACTOR_MEAN * mean(rounding)
    assert max(found) <= bound_max and mean(found) <= bound_mean, (
        f"vLLM bf16 vs float32: max {max(found):.4f}, mean {mean(found):.4f}; bounds {bound_max:.4f}, "
        f"{bound_mean:.4f} from transformers bf16 vs float32: max {max(rounding):.4f}, mean {mean(rounding):.4f}"
    )
