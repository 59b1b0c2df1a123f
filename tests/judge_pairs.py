"""Real-looking (package description, debtags tag) pairs shared by the judge backend tests."""

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


def assert_agree(judgments: list, expected: list[float]) -> None:
    """vLLM against transformers (prefix reuse) in the same dtype: every pair scored, the same verdicts, P(yes)
    within 0.06 per pair and 0.03 on average: bounds for bf16, where these 20 pairs with SmolLM2-135M measured max
    0.0526, mean 0.0235, in-process and served alike (issue 18: 0.068 / 0.019); in float32 the 1.5B judge measured
    0.0061 / 0.0013 (benchmarks/results/judge-speed.md)."""
    assert [judgment.failure for judgment in judgments] == [None] * len(expected)
    differences = [abs(judgment.score - p_yes) for judgment, p_yes in zip(judgments, expected, strict=True)]
    mean = sum(differences) / len(differences)
    assert max(differences) < 0.06 and mean < 0.03, f"max {max(differences):.4f}, mean {mean:.4f}"
    assert [judgment.score > 0.5 for judgment in judgments] == [p_yes > 0.5 for p_yes in expected]
