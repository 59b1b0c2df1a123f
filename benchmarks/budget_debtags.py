"""A judging budget on debtags: the distilled student's test gain against the pairs the judge had to judge (issue 36
item 4).

    python benchmarks/budget_debtags.py --budget 600 --by gap   # one run; then the table of every run so far:
    # benchmarks/results/budget-debtags-JUDGE.{json,md}

A run: pipelines/cold-start.toml with `mine.budget=B`, `mine.budget_by=BY` and `mine.budget_depth=D` (the shipped
rounds and label-free stopping) into runs/budget-bench/dev-NAME, and its kept model on the debtags test split
(pipelines/recall-benchmark.toml) into runs/budget-bench/test-NAME; each row is kept in the results JSON. The
reference without a budget is benchmarks/rounds_debtags.py's dev run (runs/rounds-bench/dev, every round run; the
shipped stopping keeps round 2 after running round 3) and its test runs of round 0 (zero-shot) and round 2. Pairs
judged: the distinct (document, label) pairs of the judge stage, of round 0's held-out top-up and of every round
run, i.e. what an empty judge cache would have judged; intervals: paired bootstrap over the 5,735 test packages
(2,000 resamples, 95%). Labels are read only by the evaluate stages.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import polars as pl
from rounds_debtags import interval

from eztag.artifacts import write_json, write_text
from eztag.comparison import compare_runs
from eztag.devices import host_line
from eztag.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "budget-bench"
REFERENCE = REPO / "runs" / "rounds-bench"
COLD_START = REPO / "pipelines" / "cold-start.toml"
TEST_PIPELINE = REPO / "pipelines" / "recall-benchmark.toml"
OUT = REPO / "benchmarks" / "results"
METRICS = ("P@1", "nDCG@5")


def pairs_judged(dev: Path, rounds_run: int) -> int:
    """Distinct (doc_id, label_id) pairs of the judge stage, the held-out top-up and the first `rounds_run` rounds."""
    rounds = dev / "distil" / "rounds"
    paths = [dev / "judge" / "judgments.parquet", rounds / "round-0-held-out" / "judgments.parquet"]
    paths += [rounds / f"round-{number}" / "judgments.parquet" for number in range(1, rounds_run + 1)]
    frames = [pl.read_parquet(path, columns=["doc_id", "label_id"]) for path in paths if path.exists()]
    return pl.concat(frames).unique().height


def measure(name: str, dev: Path, test: Path, full: Path, seconds: float | None, kept: int | None = None) -> dict:
    """One row: pairs judged, rounds, the kept round (`kept`: the distil report's) and the test metrics with
    intervals against zero-shot and against `full`, the test run of the kept model without a budget."""
    report = json.loads((dev / "distil" / "report.json").read_text())
    against_zero = compare_runs([REFERENCE / "test-round-0", test], ["zero-shot", name], [1, 5])
    against_full = compare_runs([full, test], ["no budget", name], [1, 5]) if test != full else None
    metrics = json.loads((test / "evaluate" / "metrics.json").read_text())["metrics"]
    reference = json.loads((full / "evaluate" / "metrics.json").read_text())["metrics"]
    return {
        "run": name,
        "pairs_judged": pairs_judged(dev, report["rounds_run"]),
        "rounds_run": report["rounds_run"],
        "kept_round": report["best_round"] if kept is None else kept,
        "training_documents_per_round": [entry["training_set"]["documents"] for entry in report["rounds"][1:]],
        "test": {metric: metrics[metric] for metric in METRICS},
        "vs_zero_shot": {metric: interval(against_zero, name, metric) for metric in METRICS},
        "vs_no_budget": {metric: interval(against_full, name, metric) if against_full else "-" for metric in METRICS},
        "no_budget_test": {metric: reference[metric] for metric in METRICS},
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, help="pairs per judging pass (mine.budget); none: only the table")
    parser.add_argument("--by", choices=["gap", "random"], default="gap", help="mine.budget_by (default gap)")
    parser.add_argument("--depth", type=int, help="mine.budget_depth (default: every candidate)")
    parser.add_argument("--holdout", type=float, help="distil.holdout (default: the pipeline's)")
    args = parser.parse_args()
    cold_start = Pipeline.load(COLD_START)
    judge = cold_start.configs["judge"].model
    rounds = json.loads((OUT / f"rounds-debtags-{judge}.json").read_text())
    kept = rounds["kept_by_label_free_stopping"]  # the reference ran every round; the stopping rule keeps this one
    full = REFERENCE / f"test-round-{kept}"
    stem = f"budget-debtags-{judge}"
    saved = OUT / f"{stem}.json"  # the rows so far: run folders need not outlive the machine that made them
    rows = {row["run"]: row for row in json.loads(saved.read_text())["rows"]} if saved.exists() else {}
    if (REFERENCE / "dev").exists():
        rows["no budget"] = measure("no budget", REFERENCE / "dev", full, full, None, kept)
    if args.budget:
        started = time.perf_counter()
        label = f"budget {args.budget}, {args.by}" + (f", depth {args.depth}" if args.depth else "")
        label += f", holdout {args.holdout}" if args.holdout else ""
        name = label.removeprefix("budget ").replace(", ", "-").replace(" ", "")  # e.g. 600-gap-depth5
        dev, test = RUNS / f"dev-{name}", RUNS / f"test-{name}"
        settings = [f"mine.budget={args.budget}", f'mine.budget_by="{args.by}"']
        settings += [f"mine.budget_depth={args.depth}"] if args.depth else []
        settings += [f"distil.holdout={args.holdout}"] if args.holdout else []
        Pipeline.load(COLD_START, settings).run(dev)
        model = dev / "distil" / "model"
        Pipeline.load(TEST_PIPELINE, [f'encode.model="{model}"']).run(test)
        seconds = round(time.perf_counter() - started, 1)
        row = measure(label, dev, test, full, seconds)
        depth = args.depth or cold_start.configs["mine"].k
        row |= {"budget": args.budget, "by": args.by, "depth": depth, "holdout": args.holdout}
        row |= {"host": host_line()}
        rows[label] = row | {"date": time.strftime("%Y-%m-%d")}
    budgeted = sorted(
        (row for name, row in rows.items() if name != "no budget"),
        key=lambda row: (row["by"], row["depth"], -row["budget"], row.get("holdout") or 0),
    )
    rows_in_order = [rows["no budget"], *budgeted]
    result = {"judge": judge, "rows": rows_in_order}
    write_json(OUT / f"{stem}.json", result)
    write_text(OUT / f"{stem}.md", markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    full = result["rows"][0]
    lines = [
        f"# A judging budget on debtags: judge {result['judge']}",
        "",
        "Generated by `python benchmarks/budget_debtags.py --budget B --by BY [--depth D] [--holdout H]`, one run per"
        " row (CPU only; host and date per row in the JSON beside this file). Training: pipelines/cold-start.toml (200"
        " random dev packages x 8 candidates, a quarter held out unless the row gives `distil.holdout`, 3 rounds with"
        " label-free stopping) with `mine.budget = B` pairs"
        " per judging pass, spent document by document (all 8 candidates, or the student's first `mine.budget_depth`"
        " D): `gap` = the smallest gap between the student's first two scores first, `random` = the control."
        " Test: 5,735 debtags test packages, 95% paired bootstrap intervals.",
        "",
        "| run | pairs judged | share of all | rounds run | kept | training documents per round | test P@1 |"
        " test nDCG@5 | nDCG@5 vs zero-shot | share of the gain | nDCG@5 vs no budget |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    zero_shot = full["test"]["nDCG@5"] - float(full["vs_zero_shot"]["nDCG@5"].split()[0])
    earlier = False
    for row in result["rows"]:
        gain = float(row["vs_zero_shot"]["nDCG@5"].split()[0])
        reference = row.get("no_budget_test", full["test"])
        mark = " †" if reference != full["test"] else ""
        earlier |= bool(mark)
        lines.append(
            f"| {row['run']}{mark} | {row['pairs_judged']:,} | {row['pairs_judged'] / full['pairs_judged']:.0%} |"
            f" {row['rounds_run']} | {row['kept_round']} | {row['training_documents_per_round']} |"
            f" {row['test']['P@1']:.4f} | {row['test']['nDCG@5']:.4f} | {row['vs_zero_shot']['nDCG@5']} |"
            f" {gain / (reference['nDCG@5'] - zero_shot):.0%} | {row['vs_no_budget']['nDCG@5']} |"
        )
    lines += [
        "",
        "Pairs judged: distinct (document, label) pairs over the judge stage, round 0's held-out top-up and every round"
        " run, what an empty judge cache would judge. The held-out documents' top-5 are judged in every pass whatever"
        " the budget (the label-free round scores need them): 250 pairs of each pass with holdout 0.25, 100 with 0.1.",
        "",
    ]
    if earlier:
        lines[-1:-1] = [
            "",
            "†: measured against an earlier no-budget run of the same pipeline (its own test nDCG@5 in the JSON,"
            " `no_budget_test`); its share of the gain and its difference from no budget are against that run, not the"
            " row above. The judge cache was"
            " rebuilt between the two: vLLM's bf16 verdicts and training differ slightly from run to run.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
