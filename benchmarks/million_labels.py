"""A million labels end to end on the CPU (issue 35 item 5): the debtags recall benchmark whose label set is the 392
real tags among generated distractor phrases.

    python benchmarks/million_labels.py --labels 1000000   # -> benchmarks/results/million-labels-cpu-1000000.*
    python benchmarks/million_labels.py --labels 1000000 --precision bfloat16   # the encoder in bf16 (AMX CPUs)
    # a GPU host without the packaged model (benchmarks/gpu_run.sh, part million): -> million-labels-h200-10000000.*
    python benchmarks/million_labels.py --labels 10000000 --set encode.model='"/tmp/models/all-minilm-l6-v2"'

Distractors: distinct phrases of 2 to 4 words drawn (seeded) by frequency from the words of the debtags *dev*
documents, so they share the test documents' vocabulary without being taken from them; a label of the same form as
a real tag's name (`text`, no description). benchmarks/pipelines/million-labels.toml runs over them, one `eztag`
process per stage (ingest, encode with its label cache, index, tag, evaluate) so that each stage's wall time and
peak resident memory (the process's ru_maxrss) are its own; then `eztag report` and `eztag compare` against the
392-label run (pipelines/recall-benchmark.toml, one process). Each invocation starts from empty run folders and an
empty label cache of its own (runs/million-labels/label-cache*), so its encode time is a first run's. The stages run
where eztag puts them (a GPU when there is one); the results are named by that device.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from eztag.artifacts import atomic_path, write_json, write_text
from eztag.devices import host_line

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "benchmarks" / "pipelines" / "million-labels.toml"
BASELINE = REPO / "pipelines" / "recall-benchmark.toml"
WORK = REPO / "runs" / "million-labels"
OUT = REPO / "benchmarks" / "results"
STAGES = ("ingest", "encode", "index", "tag", "evaluate")
WORD = re.compile(r"[a-z][a-z-]{2,}")
SEED = 0


def distractor_labels(count: int, seed: int = SEED) -> list[str]:
    """`count` distinct phrases of 2-4 words, words drawn by their frequency in the debtags dev documents."""
    frequency: collections.Counter[str] = collections.Counter()
    with gzip.open(REPO / "data" / "debtags" / "dev.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            frequency.update(WORD.findall(json.loads(line)["text"].lower()))
    words = np.array(sorted(frequency))
    weights = np.array([frequency[word] for word in words], dtype=np.float64)
    rng = np.random.default_rng(seed)
    phrases: dict[str, None] = {}
    while len(phrases) < count:
        lengths = rng.integers(2, 5, size=count)
        drawn = rng.choice(words, size=int(lengths.sum()), p=weights / weights.sum())
        for phrase in np.split(drawn, np.cumsum(lengths)[:-1]):
            phrases.setdefault(" ".join(phrase).capitalize())
            if len(phrases) == count:
                break
    return list(phrases)


def write_labels(path: Path, count: int) -> int:
    """The 392 real tags then `count` - 392 distractors, as a labels JSONL file; returns the distractor count."""
    real = (REPO / "data" / "debtags" / "labels.jsonl").read_text(encoding="utf-8").splitlines()
    taken = {json.loads(line)["text"] for line in real}
    extra = [phrase for phrase in distractor_labels(count - len(real) + len(taken)) if phrase not in taken]
    extra = extra[: count - len(real)]
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in real)
        handle.writelines(
            json.dumps({"id": f"distractor-{row:07d}", "text": text}) + "\n" for row, text in enumerate(extra)
        )
    return len(extra)


def timed(command: list[str], log: Path) -> dict[str, float]:
    """Run `command` (output appended to `log`); its wall seconds and peak resident memory in GiB."""
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(command)}; see {log}")
    return {"seconds": round(seconds, 1), "peak_gib": round(usage.ru_maxrss / 2**20, 2)}


def hardware() -> tuple[str, str]:
    """The results' name for this device ('cpu'; 'h200' for "NVIDIA H200", as benchmarks/gpu_run.sh names the GPU's
    other results) and a line naming the hardware and its CPU flags."""
    import torch

    if not torch.cuda.is_available():
        return "cpu", host_line()
    name = torch.cuda.get_device_name()
    model = re.search(r"[a-z][0-9]+", name.lower())
    return model.group() if model else "gpu", f"{name}, torch {torch.__version__}; {host_line()}"


def metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "evaluate" / "metrics.json").read_text())["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=1_000_000, help="label set size, real tags included")
    parser.add_argument("--out", type=Path, default=OUT, help="results folder")
    parser.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="[encode] precision (auto: float32 on a CPU, float16 on a GPU; bfloat16 for AMX CPUs)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="a pipeline override for every stage and the 392-label run (as `eztag --set`), e.g. encode.model",
    )
    args = parser.parse_args()
    suffix = "" if args.precision == "auto" else f"-{args.precision}"
    settings = [f'encode.precision="{args.precision}"', *args.overrides]
    common = [option for setting in settings for option in ("--set", setting)]
    eztag = [sys.executable, "-m", "eztag.cli"]
    device, host = hardware()
    stem = args.out / f"million-labels-{device}-{args.labels}{suffix}"
    WORK.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log = stem.with_suffix(".log")
    log.unlink(missing_ok=True)
    name = f"labels-{args.labels}{suffix}"
    labels_file = WORK / f"labels-{args.labels}.jsonl"
    started = time.perf_counter()
    distractors = write_labels(labels_file, args.labels)
    generate_seconds = round(time.perf_counter() - started, 1)
    run_dir, base_dir, compare_dir = WORK / name, WORK / f"labels-392{suffix}", WORK / f"compare-{args.labels}{suffix}"
    cache = WORK / f"label-cache{suffix}"
    for folder in (run_dir, base_dir, compare_dir, cache):  # a rerun times a first run, not the skips and the cache
        shutil.rmtree(folder, ignore_errors=True)
    options = ["--set", f'ingest.labels="{labels_file}"', "--set", f'encode.label_cache="{cache}"']
    options += ["--run-dir", str(run_dir), *common]
    stages = {stage: timed([*eztag, stage, str(PIPELINE), *options], log) for stage in STAGES}
    manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]
    for stage in STAGES:
        stages[stage]["stage_seconds"] = round(manifest[stage]["seconds"], 1)
    stages["report"] = timed([*eztag, "report", str(run_dir), "--out", str(WORK / f"{name}-report.html")], log)
    baseline = timed([*eztag, "run", str(BASELINE), "--run-dir", str(base_dir), *common], log)
    stages["compare"] = timed([*eztag, "compare", str(base_dir), str(run_dir), "--out", str(compare_dir)], log)
    comparison = (compare_dir / "comparison.md").read_text(encoding="utf-8")
    result = {
        "command": shlex.join(["python", "benchmarks/million_labels.py", *sys.argv[1:]]),
        "device": device,
        "host": host,
        "labels": args.labels,
        "distractors": distractors,
        "generate_labels_seconds": generate_seconds,
        "stages": stages,
        "total_seconds": round(sum(row["seconds"] for row in stages.values()), 1),
        "baseline_392_labels": baseline,
        "report_html_bytes": (WORK / f"{name}-report.html").stat().st_size,
        "metrics": {"392 labels": metrics(base_dir), f"{args.labels:,} labels": metrics(run_dir)},
        "comparison_md": comparison,
    }
    write_json(stem.with_suffix(".json"), result)
    write_text(stem.with_suffix(".md"), render(result))
    print(render(result))


def render(result: dict) -> str:
    total = result["total_seconds"]
    rows = [
        f"| {stage} | {row['seconds']:,.1f} | {row.get('stage_seconds', '-')} | {row['seconds'] / total:.0%} | "
        f"{row['peak_gib']:.2f} |"
        for stage, row in result["stages"].items()
    ]
    names = list(result["metrics"])
    keys = [key for key in ("P@1", "P@3", "P@5", "nDCG@5", "R@10", "R@100") if key in result["metrics"][names[0]]]
    return "\n".join(
        [
            f"# {result['labels']:,} labels end to end on {'the CPU' if result['device'] == 'cpu' else 'a GPU'}",
            "",
            f"`{result['command']}` — {result['host']}. The 392 debtags tags among {result['distractors']:,} "
            f"distractor phrases (generated in {result['generate_labels_seconds']} s), the 5,735 debtags test "
            "documents; one process per stage: its wall seconds (start and imports included), the stage's own "
            "seconds (the run manifest), its share of the whole and the process's peak resident memory (ru_maxrss).",
            "",
            "| stage | process s | stage s | share | peak GiB |",
            "|---|---:|---:|---:|---:|",
            *rows,
            f"| **all** | **{total:,.1f}** | | | **{max(r['peak_gib'] for r in result['stages'].values()):.2f}** |",
            "",
            f"report.html: {result['report_html_bytes'] / 1024:,.0f} KiB. The 392-label run "
            f"(pipelines/recall-benchmark.toml, one process): {result['baseline_392_labels']['seconds']:,.1f} s, peak "
            f"{result['baseline_392_labels']['peak_gib']:.2f} GiB.",
            "",
            "| label set | " + " | ".join(keys) + " |",
            "|---|" + "---:|" * len(keys),
            *[
                f"| {name} | " + " | ".join(f"{result['metrics'][name][key]:.4f}" for key in keys) + " |"
                for name in names
            ],
            "",
            "`eztag compare` (paired bootstrap over the documents, the second run against the first):",
            "",
            result["comparison_md"].strip(),
            "",
        ]
    )


if __name__ == "__main__":
    main()
