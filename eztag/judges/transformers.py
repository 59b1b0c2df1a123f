"""A local causal LM judge (transformers): next-token log-probabilities of the answer tokens, batched.

Two paths give the same scores: `naive` runs every prompt in full (left-padded batches); prefix reuse runs the
tokens a document's prompts share once, keeps the key/value cache, and scores all of its label suffixes in one
batch on a copy of that cache expanded to the batch.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any, cast

import torch

from eztag.devices import pick_device, pick_dtype
from eztag.errors import EztagError
from eztag.judges import Judge, Judgment, judgment_from_classes
from eztag.models import resolve_judge
from eztag.prompts import Pair, PromptTemplate, class_token_ids, messages_text, prompt_token_ids, truncate_tokens


class TransformersJudge(Judge):
    """`AutoModelForCausalLM` on the CPU (float32) or a GPU (bfloat16 by default); `model` is a path or GGUF alias."""

    def __init__(
        self,
        model: str,
        template: PromptTemplate,
        *,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 32,
        prefix_reuse: bool = True,
    ) -> None:
        from transformers import AutoTokenizer

        super().__init__(template)
        self.device = pick_device(device)
        dtype = pick_dtype(precision, self.device, gpu_auto="bfloat16")  # an LLM's activations need bf16's range
        self.name = model
        self.path, self.gguf_file = resolve_judge(model)
        self.dtype = dtype
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, gguf_file=self.gguf_file)
        except OSError as error:
            raise _load_error(model, error) from None
        self.model_id = model if self.gguf_file is None else f"{model}:{self.gguf_file}"
        self.batch_size = batch_size
        self.prefix_reuse = prefix_reuse
        self.class_ids = class_token_ids(self.tokenizer, template.scale)
        self.add_special_tokens = not getattr(self.tokenizer, "chat_template", None)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @functools.cached_property
    def model(self) -> Any:
        """The causal LM, loaded on first use: a run whose pairs are all in the judge cache never loads it."""
        from transformers import AutoModelForCausalLM

        try:
            loaded: Any = AutoModelForCausalLM.from_pretrained(self.path, gguf_file=self.gguf_file, dtype=self.dtype)
        except OSError as error:
            raise _load_error(self.name, error) from None
        return loaded.to(self.device).eval()

    def load(self) -> None:
        self.model  # noqa: B018 -- the cached property loads it

    def truncate(self, documents: Sequence[str], max_tokens: int) -> list[str]:
        return truncate_tokens(self.tokenizer, documents, max_tokens)

    def prompt_ids(self, pairs: Sequence[Pair]) -> list[list[int]]:
        """Token ids of each pair's full prompt."""
        return prompt_token_ids(self.tokenizer, self.template, pairs)

    def score(self, pairs: Sequence[Pair]) -> list[Judgment]:
        ids = self.prompt_ids(pairs)
        with torch.inference_mode():
            logprobs = self._score_prefix_reuse(pairs, ids) if self.prefix_reuse else self._score_naive(ids)
        return [self._judgment(row) for row in logprobs]

    def generate(self, messages: Sequence[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
        """Greedy completions (repetition penalty 1.2), left-padded batches of similar length."""
        texts = [messages_text(self.tokenizer, m) for m in messages]
        ids = self.tokenizer(texts, add_special_tokens=self.add_special_tokens)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [""] * len(ids)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            tokens, mask = _left_pad([ids[i] for i in batch], self.pad_id)
            with torch.inference_mode():
                generated = self.model.generate(
                    input_ids=tokens.to(self.device),
                    attention_mask=mask.to(self.device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    repetition_penalty=1.2,
                    pad_token_id=self.pad_id,
                )
            for i, row in zip(batch, generated[:, tokens.shape[1] :], strict=True):
                out[i] = str(self.tokenizer.decode(row, skip_special_tokens=True))
        return out

    def _judgment(self, row: torch.Tensor) -> Judgment:
        return judgment_from_classes([row[ids].tolist() for ids in self.class_ids])

    @functools.cached_property
    def cache_argument(self) -> str:
        """The forward's key/value cache argument: `cache` from transformers 5.2x, `past_key_values` before."""
        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _last_logprobs(self, cache: object = None, **inputs: object) -> torch.Tensor:
        """Log-softmax of the logits at the last position, as float32 on the CPU; `cache` is read and extended."""
        if cache is not None:
            inputs[self.cache_argument] = cache
        logits = self.model(**inputs, logits_to_keep=1, use_cache=cache is not None).logits[:, -1, :]
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    def _score_naive(self, ids: list[list[int]]) -> list[torch.Tensor]:
        """Every prompt in full, left-padded batches of similar length."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[torch.Tensor | None] = [None] * len(ids)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            tokens, mask = _left_pad([ids[i] for i in batch], self.pad_id)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            rows = self._last_logprobs(
                input_ids=tokens.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device),
            )
            for i, row in zip(batch, rows, strict=True):
                out[i] = row
        return cast(list[torch.Tensor], out)  # every slot is filled

    def _score_prefix_reuse(self, pairs: Sequence[Pair], ids: list[list[int]]) -> list[torch.Tensor]:
        """Per document: run the shared token prefix once, then its suffixes in batches on the expanded cache."""
        from transformers import DynamicCache

        groups: dict[str, list[int]] = {}
        for i, pair in enumerate(pairs):
            groups.setdefault(pair.document, []).append(i)
        out: list[torch.Tensor | None] = [None] * len(ids)
        for members in groups.values():
            shared = _common_prefix_length([ids[i] for i in members])
            if shared == 0:
                for i, row in zip(members, self._score_naive([ids[i] for i in members]), strict=True):
                    out[i] = row
                continue
            prefix = torch.tensor([ids[members[0]][:shared]], device=self.device)
            cache = DynamicCache(config=self.model.config)
            self._last_logprobs(cache, input_ids=prefix)
            layers = [(layer.keys, layer.values) for layer in cache.layers]
            for start in range(0, len(members), self.batch_size):
                batch = members[start : start + self.batch_size]
                tokens, suffix_mask = _left_pad([ids[i][shared:] for i in batch], self.pad_id)
                size = len(batch)
                expanded = DynamicCache([(k.expand(size, -1, -1, -1), v.expand(size, -1, -1, -1)) for k, v in layers])
                mask = torch.cat([torch.ones(size, shared, dtype=suffix_mask.dtype), suffix_mask], dim=1)
                positions = shared + (suffix_mask.cumsum(-1) - 1).clamp(min=0)
                rows = self._last_logprobs(
                    input_ids=tokens.to(self.device),
                    attention_mask=mask.to(self.device),
                    position_ids=positions.to(self.device),
                    cache=expanded,
                )
                for i, row in zip(batch, rows, strict=True):
                    out[i] = row
        return cast(list[torch.Tensor], out)  # every slot is filled


def _load_error(model: str, error: OSError) -> EztagError:
    return EztagError(f"cannot load judge model '{model}': {str(error).splitlines()[0]}")


def _common_prefix_length(sequences: list[list[int]]) -> int:
    """Length of the longest common prefix, leaving every sequence at least one token of its own."""
    limit = min(len(sequence) for sequence in sequences) - 1
    length = 0
    while length < limit and all(sequence[length] == sequences[0][length] for sequence in sequences):
        length += 1
    return length


def _left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, attention mask) of a left-padded batch, so every row ends at the last position."""
    width = max(len(sequence) for sequence in sequences)
    tokens = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        tokens[row, width - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
        mask[row, width - len(sequence) :] = 1
    return tokens, mask
