"""A local causal LM judge (transformers): next-token log-probabilities of the answer tokens, batched.

Three scoring paths give the same scores (`scoring` option):
- `batched`: the shared prompt prefixes of many documents run in one forward (right-padded), their key/value caches
  are gathered to every candidate of their document, and the label suffixes of all those documents run in one
  batch; batches are cut by a token budget (pairs x padded prompt length). The GPU default: few, large forwards.
- `per-document`: one document at a time, its prefix once, then its suffixes on the expanded cache. The CPU
  default: on a CPU the work, not the number of forwards, sets the time, and this path pads least.
- `naive`: every prompt in full (left-padded batches of `batch_size` pairs of similar length); the reference.

`cudnn_attention = false` keeps torch's attention off cuDNN's kernels. On an H200 torch chose them for the batched
path, and cuDNN builds an execution plan for every new input shape, which the batched path's forwards all have: its
attention calls took 2.2 s of host time in 6 forwards (2,400 pairs), against 1.3 s of GPU work in all, under the
profiler (judge-h200-profile.txt). The default stays torch's choice until a GPU run times both
(benchmarks/judge_paths.py does).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, cast

from eztag.devices import pick_device, pick_dtype
from eztag.errors import EztagError
from eztag.judges import Judge, Judgment, judgment_from_classes
from eztag.models import resolve_judge
from eztag.prompts import Pair, PromptTemplate, class_token_ids, messages_text, prompt_token_ids, truncate_tokens
from eztag.registry import lazy_module

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_module("torch")  # loaded when first used, not when a configuration is checked

Scoring = Literal["auto", "batched", "per-document", "naive"]
TOKEN_BUDGET = {"cpu": 4096, "cuda": 262144}  # tokens per batched forward (pairs x padded prompt length)


class TransformersJudge(Judge):
    """`AutoModelForCausalLM` on the CPU (float32) or a GPU (bfloat16 by default); `model` is a path or GGUF alias.

    `scoring` "auto" is `batched` on a GPU and `per-document` on the CPU (benchmarks/results/judge-paths-*.md);
    `token_budget` sizes the batched path's forwards (0: TOKEN_BUDGET for the device); `batch_size` is the
    naive and per-document paths' pairs per forward, and generation's prompts per batch; `cudnn_attention` lets
    torch pick cuDNN's attention kernels (module docstring).
    """

    def __init__(
        self,
        model: str,
        template: PromptTemplate,
        *,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 32,
        scoring: Scoring = "auto",
        token_budget: int = 0,
        cudnn_attention: bool = True,
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
        weights = model if self.gguf_file is None else f"{model}:{self.gguf_file}"
        # the precision changes the verdicts (P(yes) by up to 0.04 between bf16 and fp32), so it is part of the
        # cache key, as the vllm backend's dtype is
        self.model_id = f"{weights}@transformers-{str(dtype).removeprefix('torch.')}"
        if batch_size < 1 or token_budget < 0:
            raise EztagError("batch_size must be positive and token_budget at least 0", field="judge.options")
        self.batch_size = batch_size
        self.scoring = scoring if scoring != "auto" else ("batched" if self.device.type == "cuda" else "per-document")
        self.token_budget = token_budget or TOKEN_BUDGET.get(self.device.type, TOKEN_BUDGET["cuda"])
        self.cudnn_attention = cudnn_attention
        self.class_ids = class_token_ids(self.tokenizer, template.scale)
        answer_ids = sorted({token for ids in self.class_ids for token in ids})
        self.answer_ids = torch.tensor(answer_ids)  # the only logits read: the answer tokens' log-probabilities
        self.class_columns = [[answer_ids.index(token) for token in ids] for ids in self.class_ids]
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

    @property
    def settings(self) -> dict[str, object]:
        return {
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "scoring": self.scoring,
            "token_budget": self.token_budget if self.scoring == "batched" else None,
            "batch_size": self.batch_size if self.scoring != "batched" else None,
            "cudnn_attention": self.cudnn_attention,
        }

    def score(self, pairs: Sequence[Pair]) -> list[Judgment]:
        if self.scoring == "batched":
            return self._score_overlapped(pairs)
        ids = self.prompt_ids(pairs)
        with torch.inference_mode():
            logprobs = self._score_naive(ids) if self.scoring == "naive" else self._score_per_document(pairs, ids)
        return [self._judgment(row) for row in logprobs]

    def _score_overlapped(self, pairs: Sequence[Pair]) -> list[Judgment]:
        """The batched path in chunks of whole documents, each tokenised on a thread while the one before is scored
        (on a GPU, tokenising a prompt costs about as much time as scoring it)."""
        chunks: list[list[int]] = [[]]
        for members in _documents(pairs):
            if len(chunks[-1]) >= self.token_budget // 128:  # about one forward of pairs of ~128 tokens
                chunks.append([])
            chunks[-1].extend(members)
        out: list[Judgment | None] = [None] * len(pairs)
        with ThreadPoolExecutor(1) as pool:
            tokenised = [pool.submit(self.prompt_ids, [pairs[i] for i in chunk]) for chunk in chunks]
            for chunk, ids in zip(chunks, tokenised, strict=True):
                with torch.inference_mode():
                    rows = self._score_batched([pairs[i] for i in chunk], ids.result())
                for i, row in zip(chunk, rows, strict=True):
                    out[i] = self._judgment(row)
        return cast(list[Judgment], out)  # every slot is filled

    def generate(self, messages: Sequence[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
        """Greedy completions (repetition penalty 1.2), left-padded batches of similar length."""
        texts = [messages_text(self.tokenizer, m) for m in messages]
        ids = self.tokenizer(texts, add_special_tokens=self.add_special_tokens)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [""] * len(ids)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            tokens, mask = _left_pad([ids[i] for i in batch], self.pad_id)
            with torch.inference_mode(), self._attention_kernels():
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
        return judgment_from_classes([row[columns].tolist() for columns in self.class_columns])

    def _attention_kernels(self) -> contextlib.AbstractContextManager[object]:
        """torch's choice of attention kernels, or (`cudnn_attention` false) every kernel but cuDNN's."""
        if self.cudnn_attention:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    @functools.cached_property
    def cache_argument(self) -> str:
        """The forward's key/value cache argument: `cache` from transformers 5.2x, `past_key_values` before."""
        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _last_logprobs(self, cache: object = None, **inputs: object) -> torch.Tensor:
        """Log-probabilities of the answer tokens (`answer_ids`) at the last position, float32 on the CPU; `cache`
        is read and extended."""
        if cache is not None:
            inputs[self.cache_argument] = cache
        ids = cast(torch.Tensor, inputs["input_ids"])
        # the last position as an index tensor, not `logits_to_keep=1`: indexing copies the hidden states into a
        # contiguous [rows, 1, hidden] block, so the LM head is one matrix product, where the strided slice ran as a
        # batched product of one row each (on an H200: 21% of the batched path's GPU time, judge-h200-profile.txt)
        last = torch.tensor([ids.shape[1] - 1], device=ids.device)
        with self._attention_kernels():
            logits = self.model(**inputs, logits_to_keep=last, use_cache=cache is not None).logits[:, -1, :]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        return logprobs[:, self.answer_ids.to(logprobs.device)].cpu()

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

    def _score_per_document(self, pairs: Sequence[Pair], ids: list[list[int]]) -> list[torch.Tensor]:
        """Per document: run the shared token prefix once, then its suffixes in batches on the expanded cache."""
        from transformers import DynamicCache

        out: list[torch.Tensor | None] = [None] * len(ids)
        for members in _documents(pairs):
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

    def _score_batched(self, pairs: Sequence[Pair], ids: list[list[int]]) -> list[torch.Tensor]:
        """Many documents per forward: their prefixes together, then all their suffixes together."""
        units: list[_Unit] = []  # (shared prefix length, pair indices): a document, or a part of a large one
        alone: list[int] = []  # pairs of documents whose prompts share no prefix
        for members in _documents(pairs):
            shared = _common_prefix_length([ids[i] for i in members])
            if shared == 0:
                alone.extend(members)
                continue
            width = max(len(ids[i]) for i in members)
            per_unit = max(1, self.token_budget // width)
            units.extend((shared, members[start : start + per_unit]) for start in range(0, len(members), per_unit))
        out: list[torch.Tensor | None] = [None] * len(ids)
        for batch in _pack(units, ids, self.token_budget):
            for i, row in zip([i for _, members in batch for i in members], self._score_units(batch, ids), strict=True):
                out[i] = row
        for i, row in zip(alone, self._score_naive([ids[i] for i in alone]), strict=True):
            out[i] = row
        return cast(list[torch.Tensor], out)  # every slot is filled

    def _score_units(self, units: list[_Unit], ids: list[list[int]]) -> torch.Tensor:
        """Log-probabilities of the pairs of `units`, in order: one prefix forward, one suffix forward.

        Prefixes are right-padded (a padded position still sees its document's tokens, so no attention row is
        empty) and suffixes left-padded (each pair ends at the last position); the padding between them is masked.
        """
        from transformers import DynamicCache

        prefixes, prefix_mask = _right_pad([ids[members[0]][:shared] for shared, members in units], self.pad_id)
        cache = DynamicCache(config=self.model.config)
        width = prefixes.shape[1]
        self._last_logprobs(
            cache,
            input_ids=prefixes.to(self.device),
            attention_mask=prefix_mask.to(self.device),
            position_ids=torch.arange(width).expand(len(units), -1).to(self.device),
        )
        owner = torch.tensor([row for row, (_, members) in enumerate(units) for _ in members])
        shared = torch.tensor([shared for shared, members in units for _ in members])
        suffixes, suffix_mask = _left_pad([ids[i][s:] for s, members in units for i in members], self.pad_id)
        on_device = owner.to(self.device)
        gathered = DynamicCache(
            [(layer.keys.index_select(0, on_device), layer.values.index_select(0, on_device)) for layer in cache.layers]
        )
        del cache
        return self._last_logprobs(
            input_ids=suffixes.to(self.device),
            attention_mask=torch.cat([prefix_mask[owner], suffix_mask], dim=1).to(self.device),
            position_ids=(shared[:, None] + (suffix_mask.cumsum(-1) - 1).clamp(min=0)).to(self.device),
            cache=gathered,
        )


_Unit = tuple[int, list[int]]


def _documents(pairs: Sequence[Pair]) -> list[list[int]]:
    """Pair indices grouped by document, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        groups.setdefault(pair.document, []).append(i)
    return list(groups.values())


def _pack(units: list[_Unit], ids: list[list[int]], budget: int) -> list[list[_Unit]]:
    """Units in batches of similar prefix length whose padded size (pairs x (longest prefix + longest suffix))
    stays within `budget` tokens; a unit larger than the budget is a batch of its own."""
    batches: list[list[_Unit]] = []
    batch: list[_Unit] = []
    prefix = suffix = pairs = 0
    for unit in sorted(units, key=lambda unit: unit[0]):
        shared, members = unit
        longest = max(len(ids[i]) for i in members) - shared
        grown = (pairs + len(members)) * (max(prefix, shared) + max(suffix, longest))
        if batch and grown > budget:
            batches.append(batch)
            batch, prefix, suffix, pairs = [], 0, 0, 0
        batch.append(unit)
        prefix, suffix, pairs = max(prefix, shared), max(suffix, longest), pairs + len(members)
    if batch:
        batches.append(batch)
    return batches


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
    return _pad(sequences, pad_id, left=True)


def _right_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, attention mask) of a right-padded batch, so every row starts at position 0."""
    return _pad(sequences, pad_id, left=False)


def _pad(sequences: list[list[int]], pad_id: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(sequence) for sequence in sequences)
    tokens = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        columns = slice(width - len(sequence), width) if left else slice(0, len(sequence))
        tokens[row, columns] = torch.tensor(sequence, dtype=torch.long)
        mask[row, columns] = 1
    return tokens, mask
