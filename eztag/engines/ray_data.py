"""The `ray` engine: a stage's work units as a Ray Dataset, processed by `map_batches` over an actor pool.

Each unit is one row (pickled: texts, pairs or vectors); each actor builds its worker once (`make_worker`), so a
model or index loads once per actor; results stream back to the driver, which writes them as the local engine
would. Ray retries a unit whose actor died (Ray Data's actor pools restart actors and retry their tasks), and only
finished units reach the driver: a killed worker loses and duplicates nothing. Every node must see the run
directory and the model paths at the same paths (a shared filesystem).
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import ray

from eztag.engines import Engine, RayOptions, Worker
from eztag.judges import Judge, Judgment
from eztag.judges.vllm import VLLMJudge
from eztag.prompts import Pair, prompt_token_ids


class _UnitWorker:
    """The actor: one worker built from `make_worker`, applied to each row's pickled unit."""

    def __init__(self, make_worker: Callable[[], Worker]) -> None:
        self.work = make_worker()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [pickle.dumps(self.work(pickle.loads(unit)), protocol=5) for unit in batch["unit"]]
        return {"position": batch["position"], "result": np.array(results, dtype=object)}


class RayEngine(Engine):
    """Connects to the cluster at `options.address` (or RAY_ADDRESS), else starts a local instance."""

    def __init__(self, options: RayOptions) -> None:
        self.options = options
        if not ray.is_initialized():
            address = options.address or os.environ.get("RAY_ADDRESS")
            local: dict[str, Any] = (
                {"num_cpus": options.num_cpus, "include_dashboard": False} if address is None else {}
            )
            ray.init(address=address, log_to_driver=False, configure_logging=False, **local)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False

    def map(self, make_worker: Callable[[], Worker], units: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        if not units:
            return
        rows = [{"position": position, "unit": pickle.dumps(unit, protocol=5)} for position, unit in enumerate(units)]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _UnitWorker,
            fn_constructor_kwargs={"make_worker": make_worker},
            batch_size=1,
            batch_format="numpy",
            concurrency=min(self.options.actors, len(rows)),
            num_cpus=self.options.cpus_per_actor,
            num_gpus=self.options.gpus_per_actor,
        )
        for row in dataset.iter_rows():
            yield int(row["position"]), pickle.loads(row["result"])

    def score(
        self, judge: Judge, make_worker: Callable[[], Worker], units: Sequence[list[Pair]]
    ) -> Iterator[tuple[int, tuple[list[Judgment], float]]]:
        """A vLLM judge runs as Ray Data's vLLM processor (`ray.data.llm`); other judges in the actor pool."""
        if not isinstance(judge, VLLMJudge):
            return super().score(judge, make_worker, units)
        return self._score_on_vllm_processor(judge, units)

    def _score_on_vllm_processor(
        self, judge: VLLMJudge, units: Sequence[list[Pair]]
    ) -> Iterator[tuple[int, tuple[list[Judgment], float]]]:
        """Every pair's token-id prompt through a vLLM engine per actor (max_tokens 1, the answer tokens'
        log-probabilities back); a unit is yielded once all its pairs are back, with the wall time since the
        previous one (engine start-up included: the processor starts its engines as it runs)."""
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig

        max_model_len = judge.engine_options["max_model_len"]
        judgments: list[list[Judgment | None]] = []
        rows = []
        for position, pairs in enumerate(units):
            judgments.append([None] * len(pairs))
            for index, prompt in enumerate(prompt_token_ids(judge.tokenizer, judge.template, pairs)):
                if max_model_len is not None and len(prompt) >= max_model_len:
                    judgments[position][index] = Judgment.failed(
                        f"prompt_too_long: {len(prompt)} tokens, max_model_len {max_model_len}"
                    )
                else:
                    rows.append({"position": position, "index": index, "ids": prompt})  # not "prompt": vLLM's text
        waiting = [sum(judgment is None for judgment in unit) for unit in judgments]
        for position, count in enumerate(waiting):
            if count == 0:
                yield position, (cast(list[Judgment], judgments[position]), 0.0)
        if not rows:
            return
        answer_tokens = judge.class_token_ids
        bundle = {"CPU": self.options.cpus_per_actor} | ({"GPU": 1} if self.options.gpus_per_actor else {})
        tensor_parallel = int(judge.engine_options["tensor_parallel_size"])
        config = vLLMEngineProcessorConfig(
            model_source=judge.folder,
            engine_kwargs={
                **judge.engine_options,
                "tokenizer": judge.folder,
                "max_logprobs": len(answer_tokens),
            },
            runtime_env={"env_vars": judge.environment},
            placement_group_config={"bundles": [bundle] * tensor_parallel},
            chat_template_stage=False,
            tokenize_stage=False,
            detokenize_stage=False,
            batch_size=self.options.vllm_batch_size,
            concurrency=self.options.actors,
            log_engine_metrics=False,  # Ray's Prometheus export needs ray[serve]
        )
        sampling = {"max_tokens": 1, "temperature": 0.0, "logprob_token_ids": answer_tokens, "detokenize": False}

        def request(row: dict[str, Any]) -> dict[str, Any]:
            return {
                "position": row["position"],
                "index": row["index"],
                "tokenized_prompt": row["ids"],
                "sampling_params": sampling,
            }

        def answer(row: dict[str, Any]) -> dict[str, Any]:
            top = row["logprobs"][0] if row.get("logprobs") else {}
            return {
                "position": row["position"],
                "index": row["index"],
                "logprobs": [float(top[token]["logprob"]) if token in top else float("nan") for token in answer_tokens],
                "error": "",
            }

        processor = build_processor(config, preprocess=request, postprocess=answer)
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 64)))
        last = time.perf_counter()
        for row in processor(dataset).iter_rows():
            position, index = int(row["position"]), int(row["index"])
            error = row.get("__inference_error__") or row.get("error")
            if error:
                judgment = Judgment.failed(f"vllm_error: {str(error).splitlines()[0]}")
            elif all(np.isnan(row["logprobs"])):
                judgment = Judgment.failed("missing_logprobs: vLLM returned no log-probabilities")
            else:
                values = dict(zip(answer_tokens, row["logprobs"], strict=True))
                judgment = judge.judgment({token: value for token, value in values.items() if not np.isnan(value)})
            judgments[position][index] = judgment
            waiting[position] -= 1
            if waiting[position] == 0:
                now = time.perf_counter()
                yield position, (cast(list[Judgment], judgments[position]), now - last)
                last = now
