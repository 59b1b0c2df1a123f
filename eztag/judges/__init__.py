"""LLM relevance judges behind one interface, looked up by name; heavy imports happen only when used."""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

from eztag.errors import EztagError
from eztag.prompts import Pair, PromptTemplate, truncate_words
from eztag.registry import Registry


@dataclasses.dataclass(frozen=True)
class Judgment:
    """A score in [0, 1] with its log-odds, or a failure reason and no score.

    `score` is P(yes) on the yes/no scale but the expected grade / 3 on the graded scale, so it is no probability
    there; `log_odds` (log P(yes) - log P(no), or log P(grade >= 2) - log P(grade < 2)) is a verdict on both.
    """

    score: float | None = None
    log_odds: float | None = None
    failure: str | None = None

    @classmethod
    def failed(cls, reason: str) -> Judgment:
        return cls(failure=reason)


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(value - top) for value in values))


def judgment_from_classes(class_logprobs: Sequence[Sequence[float]]) -> Judgment:
    """Score from the next-token log-probabilities of each answer class's token spellings.

    Two classes (yes, no): P(yes) = sum P(yes spellings) / (sum P(yes) + sum P(no)), log-odds = log P(yes) - log P(no).
    Four classes (grades 0..3): score = expected grade / 3 under the softmax restricted to the grade tokens,
    log-odds = log P(2 or 3) - log P(0 or 1). Classes with no log-probability at all are a failure.
    """
    masses = [_logsumexp(list(values)) if values else -math.inf for values in class_logprobs]
    if all(mass == -math.inf for mass in masses):
        return Judgment.failed("no_answer_token: no answer token among the returned log-probabilities")
    top = max(masses)
    weights = [math.exp(mass - top) for mass in masses]
    if len(masses) == 2:
        positive, negative = masses
        score = weights[0] / sum(weights)
    else:
        half = len(masses) // 2
        positive, negative = _logsumexp(masses[half:]), _logsumexp(masses[:half])
        score = sum(grade * weight for grade, weight in enumerate(weights)) / sum(weights) / (len(masses) - 1)
    log_odds = positive - negative
    if not math.isfinite(log_odds):
        log_odds = math.copysign(1e4, log_odds)
    return Judgment(score=score, log_odds=log_odds)


class Judge(ABC):
    """Scores (document, label) pairs with one prompt template; `model_id` names the model in cache keys."""

    model_id: str

    def __init__(self, template: PromptTemplate) -> None:
        self.template = template

    @property
    def settings(self) -> dict[str, object]:
        """How this judge scores (device, dtype, scoring path, batch sizes), for the judge report; {} if nothing."""
        return {}

    def load(self) -> None:  # noqa: B027 -- a no-op for backends with nothing to load
        """Load the model now (backends that load it on first use), so that scoring times exclude loading."""

    def close(self) -> None:  # noqa: B027 -- a no-op for backends whose memory goes with the object
        """Free what outlives the judge object (an engine's processes); the judge is not used after it."""

    @abstractmethod
    def score(self, pairs: Sequence[Pair]) -> list[Judgment]:
        """One judgment per pair, in input order; failures carry a reason and no score."""

    def generate(self, messages: Sequence[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
        """Greedy completions of chat prompts (label synonyms); only some backends can generate."""
        raise EztagError(f"judge backend {type(self).__name__} cannot generate text; use backend 'transformers'")

    def truncate(self, documents: Sequence[str], max_tokens: int) -> list[str]:
        """Cut documents to a token budget (this default counts whitespace-separated words)."""
        return [truncate_words(text, max_tokens) for text in documents]


JUDGES: Registry[Judge] = Registry(
    "judge",
    {
        "transformers": "eztag.judges.transformers:TransformersJudge",
        "openai": "eztag.judges.openai:OpenAIJudge",
        "vllm": "eztag.judges.vllm:VLLMJudge",
        "cross-encoder": "eztag.judges.cross_encoder:CrossEncoderJudge",
    },
)


def get_judge(
    backend: str, model: str, template: PromptTemplate, *, section: str = "judge", **options: object
) -> Judge:
    """Instantiate the judge backend `backend` for `model` with the keyword `options` of `[SECTION.options]`."""
    return JUDGES.create(backend, model, template, options=options, field=f"{section}.options")
