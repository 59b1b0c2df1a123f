"""A vLLM offline judge for GPUs: prefix caching shares each document's prompt prefix across its labels.

Not run in this repository's tests (no GPU, vLLM not installed); only its missing-dependency error is tested.
API as documented for vLLM's V1 engine: `LLM(model, enable_prefix_caching=True, tensor_parallel_size=...)`,
`SamplingParams(max_tokens=1, temperature=0, logprobs=N, allowed_token_ids=...)`; returned log-probabilities are
the raw model ones (taken before `allowed_token_ids` is applied), as `{token_id: Logprob}` per generated token.
`allowed_token_ids` only makes sure the sampled answer token, always among the returned ones, is a yes/no spelling.
"""

from __future__ import annotations

from collections.abc import Sequence

from eztag.errors import EztagError, missing_extra
from eztag.judges import Judge, Judgment, judgment_from_classes
from eztag.models import resolve_judge
from eztag.prompts import Pair, PromptTemplate, chat_text, class_token_ids, truncate_tokens


class VLLMJudge(Judge):
    """`vllm.LLM` over a local model path (or a GGUF file); batches go to vLLM whole, it schedules them."""

    def __init__(
        self,
        model: str,
        template: PromptTemplate,
        *,
        tensor_parallel_size: int = 1,
        top_logprobs: int = 20,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
    ) -> None:
        try:
            import vllm
        except ImportError:
            raise missing_extra("vllm", "gpu") from None
        super().__init__(template)
        path, gguf_file = resolve_judge(model)
        self.model_id = model if gguf_file is None else f"{model}:{gguf_file}"
        try:
            self.llm = vllm.LLM(
                model=path if gguf_file is None else f"{path}/{gguf_file}",
                enable_prefix_caching=True,
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len,
                max_logprobs=top_logprobs,
            )
        except (OSError, ValueError) as error:
            raise EztagError(f"vLLM cannot load judge model '{model}': {str(error).splitlines()[0]}") from None
        self.tokenizer = self.llm.get_tokenizer()
        self.class_ids = class_token_ids(self.tokenizer, template.scale)
        self.sampling = vllm.SamplingParams(
            max_tokens=1,
            temperature=0,
            logprobs=top_logprobs,
            allowed_token_ids=[token for ids in self.class_ids for token in ids],
        )

    def truncate(self, documents: Sequence[str], max_tokens: int) -> list[str]:
        return truncate_tokens(self.tokenizer, documents, max_tokens)

    def score(self, pairs: Sequence[Pair]) -> list[Judgment]:
        prompts = [chat_text(self.tokenizer, self.template, pair) for pair in pairs]
        outputs = self.llm.generate(prompts, self.sampling, use_tqdm=False)
        judgments = []
        for output in outputs:
            logprobs = output.outputs[0].logprobs if output.outputs else None
            if not logprobs:
                judgments.append(Judgment.failed("missing_logprobs: vLLM returned no log-probabilities"))
                continue
            top = logprobs[0]
            judgments.append(
                judgment_from_classes([[top[token].logprob for token in ids if token in top] for ids in self.class_ids])
            )
        return judgments
