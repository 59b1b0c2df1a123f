"""Distil the judge chosen on dev into the student, and the gain the judge can be credited with, on debtags.

    python benchmarks/distil_judge_debtags.py [--smollm2]   # writes benchmarks/results/distil-judge-debtags.{json,md}
    python benchmarks/distil_judge_debtags.py --smollm2 --keep-choices   # add the SmolLM2 arm to the stored run
    python benchmarks/distil_judge_debtags.py --add-arm smollm2    # the same, where the stored run dirs are gone

The judge, label prompt, k and teacher come from benchmarks/results/teacher-debtags-dev.json (orderings of 300 dev
packages against their labels), or with --keep-choices from the stored result (the arms already run are then up
to date and only what is new runs). Training: pipelines/cold-start.toml on runs/teacher-bench/dev-train.jsonl (the
other 1,069 dev packages; no labels read before evaluate), every package mined, the same settings and seeds in
every arm:
  - "judge": the chosen judge and teacher, rounds with label-free stopping;
  - "self-training": round 1 on the judge arm's round-0 training rows with teacher weight 0 (each package's top-1
    by the student as its positive, the student's own scores as the soft targets): the same packages, rows, seed and
    schedule, no judge; trained directly (benchmarks/distil_debtags.one_round), so no re-mining, no label-free score;
  - "smollm2" (with --smollm2): SmolLM2-135M-Instruct as the judge, the same teacher.
Test split (5,735 packages): every round of every arm, paired bootstrap intervals against zero-shot, and each
judge arm's round 1 against self-training's round 1: the judge's credit. `--add-arm` trains one arm into the stored
result on a machine without its run directories: self-training is retrained on that arm's round-0 rows (the same
packages and candidates, the judge unread at teacher weight 0) and zero-shot and self-training are tested again, their
metrics recorded beside the stored ones as a reproduction check. On a random subset of test packages
the judge reranks the zero-shot top-k (the teacher's ceiling); the cost per package of tagging with the student and
of judge-reranking is measured in this run. Every judgment is cached (runs/judge-cache): a rerun judges nothing twice.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
from distil_debtags import (
    interval,
    one_round,
    paired_differences,
    per_document,
    rerank_table,
    run_pipeline,
    save,
    subset_metrics,
    subset_table,
    teacher_set,
    test_run,
    test_table,
)
from teacher_debtags import PROMPTS

from eztag.artifacts import RunDir

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "distil-judge"
PIPELINE = REPO / "pipelines" / "cold-start.toml"
CHOICES = REPO / "benchmarks" / "results" / "teacher-debtags-dev.json"
TEST_DOCUMENTS = REPO / "data" / "debtags" / "test.jsonl.gz"
ARMS = ("judge", "smollm2")  # pipeline arms; self-training is one_round on the judge arm's rows
TRAIN_DOCUMENTS = 1069  # every package of dev-train.jsonl
TEST_SUBSET = 60  # test packages the judge reranks (--test-subset)
JUDGE_DTYPES = ("bfloat16", "float32", "auto")  # --judge-dtype; the first is the default
# one round of one epoch over the 802 training packages: the 2-core CPU budget (a round re-judges ~2,600 new pairs)
TRAINING = ["distil.rounds=1", "distil.epochs=1"]


def judge_backend(dtype: str) -> list[str]:
    """vLLM in `dtype`, one generate call per 400 pairs. bfloat16 by default: on the host of the stored run (AMD EPYC,
    AVX512_BF16, no AMX) a bf16 GEMM takes 0.45x the float32 time (judge_speed.host_check); on a host without
    AVX-512 vLLM's CPU bf16 path judged SmolLM2 8x slower than float32."""
    return ['judge.backend="vllm"', f'judge.options={{max_model_len=1024, dtype="{dtype}"}}', "judge.shard_size=400"]


def judge_settings(model: str, prompt: str, dtype: str) -> list[str]:
    """The judge stage's overrides: the same for every arm that uses `model`."""
    label_template, description_template = PROMPTS[prompt]
    return [
        *judge_backend(dtype),
        'judge.template="yes-no"',
        f'judge.model="{model}"',
        f'judge.label_template="{label_template}"',
        f'judge.description_template="{description_template}"',
    ]


def teacher_settings(teacher: str) -> list[str]:
    """distil.teacher (and weight) of a dev ordering name: "judge" or "combined w=0.75"."""
    if teacher == "judge":
        return ['distil.teacher="log_odds"']
    return ['distil.teacher="combined"', f"distil.teacher_weight={float(teacher.removeprefix('combined w='))}"]


def arm_settings(name: str, chosen: dict, dtype: str) -> list[str]:
    """Every override of one training arm (the same documents, mining, training and seeds in each)."""
    train = REPO / "data" / "debtags" / "dev-train.jsonl.gz"
    base = [f'ingest.documents="{train}"', f"mine.k={chosen['k']}", f"mine.documents_limit={TRAIN_DOCUMENTS}"]
    judge = judge_settings("smollm2-135m" if name == "smollm2" else chosen["judge"], chosen["prompt"], dtype)
    return [*base, *TRAINING, *judge, *teacher_settings(chosen["teacher"])]


def arm(name: str, chosen: dict, dtype: str, flags: list[str]) -> dict:
    """Run one training arm on dev-train (all stages) in a process of its own (one vLLM engine per process), the
    judge in `dtype`, with this run's choice `flags`; its distil report and stage times."""
    subprocess.run([sys.executable, __file__, "--only-arm", name, "--judge-dtype", dtype, *flags], check=True)
    run_dir = RUNS / name
    report = json.loads((run_dir / "distil" / "report.json").read_text())
    stages = RunDir(run_dir).manifest()["stages"]
    return {
        "settings": arm_settings(name, chosen, dtype),
        "best_round": report["best_round"],
        "rounds": report["rounds"],
        "stage_seconds": {stage: round(entry["seconds"], 1) for stage, entry in stages.items()},
        "teacher_set": teacher_set(run_dir),
    }


def judge_rerank(model: str, prompt: str, dtype: str, k: int, documents: int) -> tuple[Path, pl.DataFrame, dict]:
    """The judge on the zero-shot top-k of `documents` random test packages: run dir, judgments, judge report."""
    run_dir = run_pipeline(
        PIPELINE,
        RUNS / "test-judge-rerank",
        [
            f'ingest.documents="{TEST_DOCUMENTS}"',
            f"mine.k={k}",
            f"mine.documents_limit={documents}",
            "mine.seed=2",
            *judge_settings(model, prompt, dtype),
        ],
        until="judge",
    )
    report = json.loads((run_dir / "judge" / "report.json").read_text())
    return run_dir, pl.read_parquet(run_dir / "judge" / "judgments.parquet"), report


def markdown(result: dict) -> str:
    """The results as Markdown tables."""
    chosen = result["choices"]
    lines = [f"# Distilling {chosen['judge']} into all-MiniLM-L6-v2 on debtags", ""]
    lines += [f"Generated by `{result['command']}` on {result['date']}. {result['note']}", ""]
    for name, added in result.get("added_arms", {}).items():
        lines += [f"Arm `{name}` added by `{added['command']}` on {added['date']} ({added['seconds']} s).", ""]
    lines += test_table(in_table_order(result["test"]))
    lines += [
        "",
        "Kept rounds (label-free selection): "
        + ", ".join(f"{name} round {arm['best_round']}" for name, arm in result["arms"].items())
        + ".",
    ]
    lines += ["", "### The judge's credit: round 1 of each judge arm against self-training's round 1", ""]
    lines += ["| arm | P@1 difference | nDCG@5 difference |", "|---|---:|---:|"]
    for name, versus in result["credit"].items():
        lines.append(f"| {name} | " + " | ".join(interval(v) for v in versus.values()) + " |")
    subset = result["test_subset"]
    lines += subset_table({**subset, "rows": in_table_order(subset["rows"])})
    cost = result["cost"]
    lines += [
        "",
        f"Cost per package, this machine, this run: the student tags in {cost['student_ms']} ms (encode + top-100 "
        f"search, all 5,735 test packages); judge-reranking its top-{subset['k']} adds {cost['judge_ms']} ms "
        f"({cost['judge_pairs_per_s']} pairs/s). Ratio: {cost['ratio']}x.",
    ]
    lines += ["", "## Rounds: the label-free score (held-out dev packages) beside the test metric", ""]
    lines += [
        "| arm | round | LLM-P@1 | LLM-P@5 | Spearman with judge | pairs judged | train s | test P@1 | test nDCG@5 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, arm_result in result["arms"].items():
        for row in arm_result["rounds"]:
            free, test = row["label_free"], result["test"][round_name(name, row["round"])]["metrics"]
            lines.append(
                f"| {name} | {row['round']} | {free['llm_p@1']:.4f} | {free['llm_p@5']:.4f} | "
                f"{row['agreement']['spearman']} | {row['judge']['judged_now']} | "
                f"{row.get('training', {}).get('seconds', '-')} | {test['P@1']:.4f} | {test['nDCG@5']:.4f} |"
            )
    only = result["self_training"]
    lines += [
        "",
        "Self-training round 1 (no re-mining, so no label-free score): agreement with the judge's "
        "round-0 verdicts (mean Spearman over each package's candidates, top-1 agreement):",
        "",
    ]
    lines += ["| model | packages | Spearman with judge | top-1 agreement |", "|---|---|---:|---:|"]
    for name in ("zero-shot", "self-training round 1"):
        for part, values in only[name].items():
            lines.append(f"| {name} | {part} | {values['spearman']} | {values['top1_agreement']} |")
    for model_name, values in result.get("reproduced", {}).items():
        lines.append(
            f"\nReproduced with the added arm ({', '.join(result['added_arms'])}): {model_name} test metrics "
            f"{values['now']} (stored run: {values['stored']})."
        )
    lines += ["", "## Wall time by stage (seconds, this 2-core CPU)", ""]
    stages = list(next(iter(result["arms"].values()))["stage_seconds"])
    lines += ["| arm | " + " | ".join(stages) + " |", "|---|" + "---:|" * len(stages)]
    for name, arm_result in result["arms"].items():
        times = arm_result["stage_seconds"]
        lines.append(f"| {name} | " + " | ".join(str(times.get(stage, "-")) for stage in stages) + " |")
    lines.append("")
    return "\n".join(lines)


TABLE_ORDER = ("student", "judge", "combined", "zero-shot", "judge round", "self-training", "smollm2")


def in_table_order(rows: dict[str, dict]) -> dict[str, dict]:
    """Table rows in reading order (the JSON keeps its keys sorted): rerankings, zero-shot, the judge arm,
    self-training, the added arms; the longest matching TABLE_ORDER prefix decides."""

    def place(name: str) -> tuple[int, str]:
        prefixes = [prefix for prefix in TABLE_ORDER if name.startswith(prefix)]
        return (TABLE_ORDER.index(max(prefixes, key=len)) if prefixes else len(TABLE_ORDER), name)

    return dict(sorted(rows.items(), key=lambda item: place(item[0])))


def round_name(arm_name: str, number: int) -> str:
    """The test table's row of one arm's round (round 0 is the zero-shot student in every arm)."""
    return "zero-shot" if number == 0 else f"{arm_name} round {number}"


def add_arm(name: str, stored: Path, dtype: str) -> None:
    """Train arm `name` (its judge in `dtype`) with the stored result's choices and add its rounds, test rows and
    credit to the result."""
    result = json.loads(stored.read_text())
    chosen = result["choices"]
    started = time.perf_counter()
    result["arms"][name] = arm(name, chosen, dtype, ["--keep-choices"])
    self_training_dir = RUNS / f"self-training-from-{name}"
    one_round(RUNS / name, {"teacher": "combined", "teacher_weight": 0.0}, self_training_dir, "self-training round 1")
    models = {"zero-shot": "default", "self-training round 1": str(self_training_dir / "model")}
    models.update({round_name(name, row["round"]): row["model"] for row in result["arms"][name]["rounds"][1:]})
    test = {model_name: test_run(model_name.replace(" ", "-"), model, RUNS) for model_name, model in models.items()}
    ingest_dir = REPO / test["zero-shot"]["run_dir"] / "ingest"
    scores = {
        model_name: per_document(ingest_dir, pl.read_parquet(REPO / row["run_dir"] / "tag" / "tags.parquet"))
        for model_name, row in test.items()
    }
    for model_name in models:
        if model_name.startswith(name):
            test[model_name]["vs zero-shot"] = paired_differences(scores[model_name], scores["zero-shot"])
            result["test"][model_name] = test[model_name]
    result["credit"][name] = paired_differences(scores[f"{name} round 1"], scores["self-training round 1"])
    result["reproduced"] = {
        model_name: {"stored": result["test"][model_name]["metrics"], "now": test[model_name]["metrics"]}
        for model_name in ("zero-shot", "self-training round 1")
    }
    result["added_arms"] = {
        **result.get("added_arms", {}),
        name: {
            "command": " ".join(["python benchmarks/distil_judge_debtags.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d"),
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
    save("distil-judge-debtags", result, markdown(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smollm2", action="store_true", help="also train with SmolLM2-135M as the judge")
    parser.add_argument("--test-subset", type=int, default=TEST_SUBSET, help="test packages the judge reranks")
    parser.add_argument("--only-arm", choices=ARMS, help="run this training arm's pipeline, nothing else")
    parser.add_argument(
        "--add-arm",
        choices=ARMS[1:],
        help="train this arm with the stored result's choices and add it to that result (its run dirs may be gone)",
    )
    parser.add_argument(
        "--judge-dtype",
        choices=JUDGE_DTYPES,
        default=JUDGE_DTYPES[0],
        help="the vLLM judge's dtype (float32 where the CPU has no AVX-512: vLLM's bf16 path is slow there)",
    )
    parser.add_argument(
        "--keep-choices",
        action="store_true",
        help="train with the choices of the stored result (distil-judge-debtags.json), not the dev table's best now",
    )
    args = parser.parse_args()
    stored = REPO / "benchmarks" / "results" / "distil-judge-debtags.json"
    if args.add_arm:
        add_arm(args.add_arm, stored, args.judge_dtype)
        return
    chosen = (
        json.loads(stored.read_text())["choices"] if args.keep_choices else json.loads(CHOICES.read_text())["chosen"]
    )
    if args.only_arm:
        run_pipeline(PIPELINE, RUNS / args.only_arm, arm_settings(args.only_arm, chosen, args.judge_dtype))
        return
    started = time.perf_counter()
    flags = ["--keep-choices"] if args.keep_choices else []
    arms = {name: arm(name, chosen, args.judge_dtype, flags) for name in ARMS if name != "smollm2" or args.smollm2}
    self_training = one_round(
        RUNS / "judge", {"teacher": "combined", "teacher_weight": 0.0}, RUNS / "self-training", "self-training round 1"
    )
    models = {"zero-shot": "default"}
    for name, arm_result in arms.items():
        models.update({round_name(name, row["round"]): row["model"] for row in arm_result["rounds"][1:]})
    models["self-training round 1"] = str(RUNS / "self-training" / "model")
    test = {name: test_run(name.replace(" ", "-"), model, RUNS) for name, model in models.items()}

    subset_dir, judgments, judge_report = judge_rerank(
        chosen["judge"], chosen["prompt"], args.judge_dtype, chosen["k"], args.test_subset
    )
    ingest_dir, doc_ids = subset_dir / "ingest", set(judgments["doc_id"])
    rows = rerank_table(subset_dir, judgments)
    tags = {name: pl.read_parquet(REPO / row["run_dir"] / "tag" / "tags.parquet") for name, row in test.items()}
    for name, frame in tags.items():
        rows[f"{name} (top-100 retrieval)"] = subset_metrics(ingest_dir, frame, doc_ids)
    scores = {name: per_document(ingest_dir, frame) for name, frame in tags.items()}
    for name, row in test.items():
        if name != "zero-shot":
            row["vs zero-shot"] = paired_differences(scores[name], scores["zero-shot"])
    credit = {name: paired_differences(scores[f"{name} round 1"], scores["self-training round 1"]) for name in arms}
    student_ms = test["zero-shot"]["ms_per_document"]  # scoring time: the model load is start-up, not per package
    judge_ms = round(1000 * judge_report["scoring_seconds"] / len(doc_ids), 1)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python benchmarks/distil_judge_debtags.py", *sys.argv[1:]]),
        "note": (
            f"CPU only (2 cores, no AMX); judge {chosen['judge']} ({', '.join(judge_backend(args.judge_dtype))}), "
            f"encoder all-MiniLM-L6-v2. Judge, label prompt `{chosen['prompt']}`, k = {chosen['k']} and teacher "
            f"`{chosen['teacher']}` chosen on 300 dev packages (teacher-debtags-dev.md); training on the other "
            f"{TRAIN_DOCUMENTS} dev packages' texts ({', '.join(TRAINING)}); test labels read only for the tables."
        ),
        "choices": chosen,
        "arms": arms,
        "self_training": self_training,
        "test": test,
        "credit": credit,
        "test_subset": {"documents": len(doc_ids), "k": chosen["k"], "judge": judge_report, "rows": rows},
        "cost": {
            "student_ms": student_ms,
            "judge_ms": judge_ms,
            "judge_pairs_per_s": judge_report["pairs_per_second"],
            "ratio": round((student_ms + judge_ms) / student_ms, 1),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    save("distil-judge-debtags", result, markdown(result))


if __name__ == "__main__":
    main()
