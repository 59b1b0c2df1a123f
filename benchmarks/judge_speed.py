"""Judge speed through the judge stage (cache writes included), one backend setting per call, on this machine.

25 debtags sample documents x 8 mined tags = 200 pairs; ingest..mine run once into WORK/base-MODEL and are
copied for each setting, so only the judge stage runs (in this process, as `eztag judge` runs it). Start-up (model
load, engine start, or server start until it answers) is timed apart from judging. Peak memory: the largest sum of
resident memory over this process and all its descendants (engine workers, the served engine), sampled every 0.2 s.

    python benchmarks/judge_speed.py --setting transformers-fp32 --model smollm2-135m    # one setting per call
    python benchmarks/judge_speed.py --table                                              # the table, agreement

Settings: transformers-fp32 and transformers-bf16 (prefix reuse), vllm (in-process, bf16, prefix caching, block 32),
vllm-fp32 (the same in float32), vllm-served (`python -m vllm.entrypoints.openai.api_server`, the `openai` backend,
completions route).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import polars as pl
import psutil

from eztag.artifacts import RunDir
from eztag.devices import bf16_gemm_speedup, cpu_flags
from eztag.judges.vllm import cpu_environment, server_command
from eztag.judging import P_YES, build_judge
from eztag.models import resolve_judge_folder
from eztag.pipeline import Pipeline
from eztag.servers import free_port, kill, start_server

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "transformers-fp32": ("transformers", {"device": "cpu", "precision": "float32", "scoring": "per-document"}),
    "transformers-bf16": ("transformers", {"device": "cpu", "precision": "bfloat16", "scoring": "per-document"}),
    "vllm": ("vllm", {"max_model_len": 1024, "dtype": "bfloat16"}),
    "vllm-fp32": ("vllm", {"max_model_len": 1024, "dtype": "float32"}),  # what dtype "auto" picks on a CPU without AMX
    "vllm-served": ("openai", {"route": "completions", "concurrency": 16, "top_logprobs": 20, "timeout": 600.0}),
}
AGREEMENT = (  # (setting, reference): same weights and pairs; bf16 against bf16, fp32 against fp32, and fp32 vs bf16
    ("vllm", "transformers-bf16"),
    ("vllm-served", "transformers-bf16"),
    ("vllm-fp32", "transformers-fp32"),
    ("transformers-fp32", "transformers-bf16"),
)
PIPELINE = """[pipeline]
name = "judge-speed"
stages = ["ingest", "encode", "index", "mine", "judge"]
[ingest]
documents = "{data}/sample.jsonl"
labels = "{data}/labels.jsonl"
[mine]
k = 8
documents_limit = 25
sample = "first"
[judge]
backend = "{backend}"
model = "{model}"
template = "yes-no"
domain = "software package"
document_template = "{{title}}: {{text}}"
max_document_tokens = 128
[judge.options]
{options}
"""


class PeakMemory:
    """Largest resident memory summed over this process and its descendants, sampled in a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self.stop.wait(0.2):
            total = 0
            for process in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += process.memory_info().rss
            self.peak = max(self.peak, total)


def pipeline_toml(backend: str, model: str, options: dict[str, object]) -> str:
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in options.items())
    return PIPELINE.format(data=REPO / "data" / "debtags", backend=backend, model=model, options=lines)


def run_setting(setting: str, model: str, out: Path, work: Path) -> dict[str, object]:
    backend, options = SETTINGS[setting]
    options = dict(options)
    base = work / f"base-{model}"
    if not (base / "mine").is_dir():
        toml = work / "base.toml"
        toml.parent.mkdir(parents=True, exist_ok=True)
        toml.write_text(pipeline_toml("transformers", model, {}), encoding="utf-8")
        Pipeline.load(toml).run(base, until="mine")
    run_dir = work / f"{model}-{setting}"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(base, run_dir)
    memory = PeakMemory()
    memory.thread.start()
    server = None
    started = time.perf_counter()
    if setting == "vllm-served":
        folder = resolve_judge_folder(model)
        port = free_port()
        url = f"http://127.0.0.1:{port}/v1"
        env = {**os.environ, **cpu_environment()}
        command = server_command(folder, port, name=model)
        server = start_server(command, url, run_dir / "server.log", env=env, timeout=900)
        options.update(base_url=url, tokenizer=folder)
    startup = [time.perf_counter() - started]
    toml = run_dir / "pipeline.toml"
    toml.write_text(pipeline_toml(backend, model, options), encoding="utf-8")
    pipeline = Pipeline.load(toml)
    try:
        begun = time.perf_counter()
        # built and loaded here, kept by build_judge for the stage: start-up, not judging
        build_judge(pipeline.configs["judge"]).load()
        startup.append(time.perf_counter() - begun)
        report = pipeline.run(run_dir, until="judge")["judge"]
    finally:
        if server is not None:
            kill(server)
        memory.stop.set()
    # the judge stage's own wall time (the manifest's; the judge was built before it): judging, cache writes, outputs
    judging = RunDir(run_dir).manifest()["stages"]["judge"]["seconds"]
    row = {
        "model": model,
        "setting": setting,
        "pairs": report["judged_now"],
        "failures": report["failures"],
        "startup_s": round(sum(startup), 1),
        "judge_stage_s": round(judging, 2),
        "pairs_per_s": round(report["judged_now"] / judging, 2),
        "scoring_pairs_per_s": report["pairs_per_second"],
        "peak_memory_gib": round(memory.peak / 2**30, 2),
    }
    with (out / "judge-speed.jsonl").open("a", encoding="utf-8") as results:
        results.write(json.dumps(row) + "\n")
    return row


def agreement(work: Path, model: str, setting: str, reference: str) -> dict[str, object] | None:
    """P(yes) differences and verdict agreement of `setting` against `reference` on the same pairs."""
    paths = [work / f"{model}-{name}" / "judge" / "judgments.parquet" for name in (setting, reference)]
    if not all(path.is_file() for path in paths):
        return None
    frames = [pl.read_parquet(path).select("doc_id", "label_id", P_YES) for path in paths]
    joined = frames[0].join(frames[1], on=["doc_id", "label_id"], suffix="_ref").drop_nulls()
    difference = (joined["p_yes"] - joined["p_yes_ref"]).abs()
    same = ((joined["p_yes"] > 0.5) == (joined["p_yes_ref"] > 0.5)).sum()
    return {
        "model": model,
        "setting": setting,
        "reference": reference,
        "pairs": joined.height,
        "max_abs_diff": round(float(difference.max()), 4),
        "mean_abs_diff": round(float(difference.mean()), 4),
        "same_verdict": f"{same}/{joined.height}",
    }


def host_check() -> str:
    """The CPU's bf16-related flags and the time of a bf16 GEMM relative to float32 on this host, measured now."""
    import torch

    flags = cpu_flags()
    wanted = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    present = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in wanted)
    ratio = 1 / bf16_gemm_speedup(size=512, repeats=50)
    return (
        f"Host: {present}; a 512x1536 by 1536x1536 GEMM takes {ratio:.2f}x as long in bfloat16 as in float32 "
        f"here (torch {torch.__version__}, {torch.get_num_threads()} threads, measured with the table)."
    )


def table(out: Path, work: Path) -> str:
    rows = [json.loads(line) for line in (out / "judge-speed.jsonl").read_text().splitlines()]
    keys = ("model", "setting", "pairs", "failures", "startup_s", "judge_stage_s", "pairs_per_s")
    lines = ["| model | setting | pairs | failures | start-up s | judge stage s | pairs/s | scoring only pairs/s |"]
    lines[0] += " peak memory GiB |"
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        values = [*(row[key] for key in keys), row["scoring_pairs_per_s"], row["peak_memory_gib"]]
        lines.append("| " + " | ".join(map(str, values)) + " |")
    agreements = [
        found
        for model in dict.fromkeys(row["model"] for row in rows)
        for setting, reference in AGREEMENT
        if (found := agreement(work, model, setting, reference))
    ]
    if agreements:
        lines += ["", "| model | setting | against | pairs | max abs diff P(yes) | mean | same verdict |"]
        lines.append("|---|---|---|---:|---:|---:|---:|")
        for found in agreements:
            keys = ("model", "setting", "reference", "pairs", "max_abs_diff", "mean_abs_diff", "same_verdict")
            lines.append("| " + " | ".join(str(found[key]) for key in keys) + " |")
    (out / "judge-agreement.json").write_text(json.dumps(agreements, indent=1) + "\n", encoding="utf-8")
    return "\n".join([*lines, "", host_check()]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, default=Path("/tmp/eztag-judge-speed"), help="run folders (big)")
    parser.add_argument("--table", action="store_true", help="write judge-speed.md from the rows measured so far")
    args = parser.parse_args()
    if args.setting:
        print(json.dumps(run_setting(args.setting, args.model, args.out, args.work)))
    if args.table:
        text = table(args.out, args.work)
        (args.out / "judge-speed.md").write_text(text, encoding="utf-8")
        print(text)


if __name__ == "__main__":  # vLLM spawns its workers: the engine must start under this guard
    main()
