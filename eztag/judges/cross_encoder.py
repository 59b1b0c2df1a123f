"""A cross-encoder as a cheap teacher: score = sigmoid of its single logit for (document, label text)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from eztag.devices import pick_device
from eztag.errors import EztagError
from eztag.judges import Judge, Judgment
from eztag.prompts import Pair, PromptTemplate, truncate_tokens
from eztag.registry import lazy_module

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_module("torch")  # loaded when first used, not when a configuration is checked


class CrossEncoderJudge(Judge):
    """`sentence_transformers.CrossEncoder` with one output; the label side is "label: description".

    The prompt template only names the cache key here: a cross-encoder reads the raw pair, not a prompt.
    """

    def __init__(self, model: str, template: PromptTemplate, *, device: str = "auto", batch_size: int = 64) -> None:
        from sentence_transformers import CrossEncoder

        super().__init__(template)
        try:
            self.model = CrossEncoder(model, device=str(pick_device(device)), num_labels=1)
        except OSError as error:
            raise EztagError(f"cannot load cross-encoder '{model}': {str(error).splitlines()[0]}") from None
        self.model_id = model
        self.batch_size = batch_size

    def truncate(self, documents: Sequence[str], max_tokens: int) -> list[str]:
        return truncate_tokens(self.model.tokenizer, documents, max_tokens)

    def score(self, pairs: Sequence[Pair]) -> list[Judgment]:
        inputs = [
            (pair.document, f"{pair.label}: {pair.description}" if pair.description else pair.label) for pair in pairs
        ]
        logits = self.model.predict(
            inputs, batch_size=self.batch_size, activation_fn=torch.nn.Identity(), show_progress_bar=False
        )
        return [Judgment(score=1 / (1 + math.exp(-float(logit))), log_odds=float(logit)) for logit in logits]
