"""Rounds of distillation with the cold-start pipeline's judge on debtags: the test metric of every round beside the
label-free score that chooses among them (issue 36 item 3).

    python benchmarks/rounds_debtags.py [--rounds 3]   # writes benchmarks/results/rounds-debtags-JUDGE.{json,md}

1. Dev: pipelines/cold-start.toml with `distil.rounds=N` and `distil.min_improvement=-1` (every round runs; the
   label-free stopping rule is applied here afterwards, as the stage would) into runs/rounds-bench/dev. The judge
   cache (runs/judge-cache) serves every pair judged before, so only each round's newly mined pairs are judged.
2. Test (5,735 packages): pipelines/recall-benchmark.toml with each round's model (round 0: the zero-shot encoder)
   into runs/rounds-bench/test-round-N, and `eztag compare` of them: paired bootstrap intervals (2,000 resamples,
   95%) of every round against round 0, and of every round against the one before.
Labels are read only by the evaluate stages.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.calibrate_debtags import host_line
from eztag.artifacts import write_json, write_text
from eztag.comparison import Comparison, compare_runs
from eztag.distillation.selection import selection_score
from eztag.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "rounds-bench"
COLD_START = REPO / "pipelines" / "cold-start.toml"
TEST_PIPELINE = REPO / "pipelines" / "recall-benchmark.toml"
OUT = REPO / "benchmarks" / "results"
METRICS = ("P@1", "nDCG@5")


def interval(comparison: Comparison, name: str, metric: str) -> str:
    """`+d [lo, hi]` of `metric` for run `name` in a comparison, or '-' for the baseline."""
    found = comparison.intervals.get(name, {}).get(metric)
    return "-" if found is None else f"{found.difference:+.4f} [{found.low:+.4f}, {found.high:+.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="training rounds (default 3)")
    args = parser.parse_args()
    started = time.perf_counter()
    dev = RUNS / "dev"
    cold_start = Pipeline.load(COLD_START, [f"distil.rounds={args.rounds}", "distil.min_improvement=-1"])
    cold_start.run(dev)
    history = json.loads((dev / "distil" / "report.json").read_text())["rounds"]
    tests = []
    for number, model in enumerate(entry["model"] for entry in history):
        test = RUNS / f"test-round-{number}"
        Pipeline.load(TEST_PIPELINE, [f'encode.model="{model}"']).run(test)
        tests.append(test)
    names = [f"round {number}" for number in range(len(tests))]
    ks = [1, 5]
    against_zero = compare_runs(tests, names, ks)
    against_previous = [compare_runs(tests[i - 1 : i + 1], names[i - 1 : i + 1], ks) for i in range(1, len(tests))]
    metrics = [json.loads((test / "evaluate" / "metrics.json").read_text())["metrics"] for test in tests]
    best, best_score = 0, selection_score(history[0]["label_free"])
    for entry in history[1:]:  # the distil stage's rule with min_improvement 0: stop at the first round not better
        if selection_score(entry["label_free"]) <= best_score:
            break
        best, best_score = entry["round"], selection_score(entry["label_free"])
    rows = []
    for number, entry in enumerate(history):
        rows.append(
            {
                "round": number,
                "label_free": entry["label_free"],
                "label_free_score": round(selection_score(entry["label_free"]), 4),
                "agreement": entry["agreement"],
                "pairs_judged": entry["judge"]["judged_now"],
                "train_seconds": entry.get("training", {}).get("seconds"),
                "test": {metric: metrics[number][metric] for metric in METRICS},
                "vs_round_0": {metric: interval(against_zero, names[number], metric) for metric in METRICS},
                "vs_previous": {
                    metric: interval(against_previous[number - 1], names[number], metric) if number else "-"
                    for metric in METRICS
                },
            }
        )
    judge = cold_start.configs["judge"].model
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "host": host_line(),
        "judge": judge,
        "rounds": rows,
        "kept_by_label_free_stopping": best,
        "test_documents": pl.read_parquet(tests[0] / "evaluate" / "per_document.parquet").height,
        "seconds": round(time.perf_counter() - started, 1),
    }
    stem = f"rounds-debtags-{judge}"
    write_json(OUT / f"{stem}.json", result)
    write_text(OUT / f"{stem}.md", markdown(result, args.rounds))
    print(markdown(result, args.rounds))


def markdown(result: dict, rounds: int) -> str:
    lines = [
        f"# Rounds of distillation on debtags: judge {result['judge']}",
        "",
        f"Generated by `python benchmarks/rounds_debtags.py --rounds {rounds}` on {result['date']} ({result['host']};"
        f" {result['seconds']:.0f} s). Training: pipelines/cold-start.toml"
        " (200 random dev packages x 8 candidates, a quarter held out for the label-free score), every round run.",
        f" Test: {result['test_documents']:,} debtags test packages, 95% paired bootstrap intervals.",
        "",
        "| round | LLM-P@1 | LLM-P@5 | label-free score | Spearman with judge | pairs judged now | train s | test P@1 |"
        " P@1 vs round 0 | P@1 vs previous | test nDCG@5 | nDCG@5 vs round 0 | nDCG@5 vs previous |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rounds"]:
        free, test = row["label_free"], row["test"]
        kept = " (kept)" if row["round"] == result["kept_by_label_free_stopping"] else ""
        train = "-" if row["train_seconds"] is None else f"{row['train_seconds']:.1f}"
        lines.append(
            f"| {row['round']}{kept} | {free['llm_p@1']:.4f} | {free['llm_p@5']:.4f} | {row['label_free_score']:.4f} | "
            f"{row['agreement']['spearman']:.4f} | {row['pairs_judged']} | {train} | {test['P@1']:.4f} | "
            f"{row['vs_round_0']['P@1']} | {row['vs_previous']['P@1']} | {test['nDCG@5']:.4f} | "
            f"{row['vs_round_0']['nDCG@5']} | {row['vs_previous']['nDCG@5']} |"
        )
    lines += [
        "",
        "(kept): the round the distil stage's label-free stopping keeps (rounds stop at the first round whose score"
        " does not improve on the best so far). Pairs judged now: judged in this run, the judge cache"
        " (runs/judge-cache) holding the others from earlier runs. Test labels are read only by evaluate.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
