"""The judge as a teacher on debtags dev: which judge, prompt, k and teacher weight order the student's candidates best.

    python benchmarks/teacher_debtags.py     # writes benchmarks/results/teacher-debtags-dev.{json,md}

debtags dev (1,369 packages) is split once, by a seeded shuffle, into SELECT_DOCUMENTS packages for the choices
below (`data/debtags/dev-select.jsonl.gz`) and the rest for label-free training (`dev-train.jsonl.gz`, never read
here). On the choice packages the zero-shot student mines its top-8 tags; each judge (vLLM in-process, one engine
per judge for all prompts) judges every (package, tag) pair under each label prompt:
the tag's text with or without its facet name, and with or without the facet's description (the "Tag group" line).
Each ordering of the candidates (student, judge, combined teacher at several weights; top-4 or top-8) is scored
against the dev labels: P@1 and nDCG@5, each with its 95% paired bootstrap interval against the student's own order.
The chosen setting is the best nDCG@5 difference. Every judgment is cached in runs/judge-cache: a rerun judges
nothing twice.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
from distil_debtags import paired_differences, per_document, reranked, run_pipeline

from eztag.artifacts import write_json, write_text
from eztag.distillation import data as distil_data
from eztag.distillation.config import DistilConfig

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "teacher-bench"
PIPELINE = REPO / "pipelines" / "cold-start.toml"
SELECT = REPO / "data" / "debtags" / "dev-select.jsonl.gz"  # benchmarks/build_debtags.py split_dev
SELECT_DOCUMENTS = 300
KS = (4, 8)  # candidate depths compared (those up to --k)
WEIGHTS = (1.0, 0.75, 0.5, 0.25)
JUDGES = ("qwen2.5-coder-1.5b", "smollm2-135m")
BACKENDS = {  # judge.backend, judge.options
    "vllm": ("vllm", "{max_model_len=1024}"),  # dtype auto (bf16 where it measures faster), prefix caching
    "transformers": ("transformers", '{device="cpu", precision="float32", scoring="per-document"}'),
}
PROMPTS = {  # name -> (judge.label_template, judge.description_template), template yes-no
    "tag, facet description": ("{text}", "{description}"),
    "tag": ("{text}", ""),
    "facet: tag, facet description": ("{facet}: {text}", "{description}"),
    "facet: tag": ("{facet}: {text}", ""),
}


def orderings(run_dir: Path, judgments: pl.DataFrame, k: int) -> dict[str, dict[str, object]]:
    """For each k: the student's order and the judge's and combined teachers' orders of the student's top-k, each
    with P@1 and nDCG@5 and the paired bootstrap difference to the student."""
    ingest_dir, rows = run_dir / "ingest", {}
    documents = pl.read_parquet(ingest_dir / "documents.parquet").height
    if judgments["doc_id"].n_unique() != documents:  # per_document scores every ingested document
        raise SystemExit(f"{run_dir}: {judgments['doc_id'].n_unique()} of {documents} documents judged")
    for depth in (depth for depth in KS if depth <= k):
        top = judgments.filter(pl.col("student_rank") <= depth)
        student = per_document(ingest_dir, reranked(top, "student_score"))
        teachers = {"student": student}
        for weight in WEIGHTS:
            config = DistilConfig(teacher="log_odds") if weight == 1.0 else DistilConfig(teacher_weight=weight)
            name = "judge" if weight == 1.0 else f"combined w={weight}"
            teachers[name] = per_document(ingest_dir, reranked(distil_data.teacher_scores(top, config), "teacher"))
        for name, values in teachers.items():
            row: dict[str, object] = {metric: round(float(v.mean()), 4) for metric, v in values.items()}
            if name != "student":
                row["vs student"] = paired_differences(values, student)
            rows[f"top-{depth} {name}"] = row
    return rows


def run_dir_of(model: str, prompt: str) -> Path:
    """The run folder of one judge and label prompt."""
    return RUNS / "dev" / model / prompt.replace(", ", "+").replace(": ", "-").replace(" ", "-")


def judge_prompts(model: str, prompts: list[str], k: int, backend: str) -> None:
    """Run ingest..judge for every label prompt with one judge (`build_judge` keeps one vLLM engine for all)."""
    base = [
        f'ingest.documents="{SELECT}"',
        f"mine.k={k}",
        f"mine.documents_limit={SELECT_DOCUMENTS}",
        f'judge.backend="{BACKENDS[backend][0]}"',
        f"judge.options={BACKENDS[backend][1]}",
        "judge.shard_size=400",  # one vLLM generate per 50 packages' pairs (cold-start's 32 suits transformers)
        'judge.template="yes-no"',
        f'judge.model="{model}"',
    ]
    for prompt in prompts:
        label_template, description_template = PROMPTS[prompt]
        settings = [f'judge.label_template="{label_template}"', f'judge.description_template="{description_template}"']
        run_pipeline(PIPELINE, run_dir_of(model, prompt), [*base, *settings], until="judge")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judges", nargs="+", choices=JUDGES, default=list(JUDGES))
    parser.add_argument("--prompts", nargs="+", choices=PROMPTS, default=list(PROMPTS))
    parser.add_argument("--k", type=int, choices=KS, default=max(KS), help="candidates judged per package")
    parser.add_argument("--backend", choices=BACKENDS, default="vllm")
    parser.add_argument("--only-judge", action="store_true", help="judge with the one judge given, nothing else")
    args = parser.parse_args()
    if args.only_judge:
        judge_prompts(args.judges[0], args.prompts, args.k, args.backend)
        return
    judges: dict[str, dict[str, dict]] = {}
    for model in args.judges:  # a process per judge: one vLLM engine per process
        command = [sys.executable, __file__, "--only-judge", "--judges", model, "--k", str(args.k)]
        command += ["--backend", args.backend, "--prompts"]
        subprocess.run([*command, *args.prompts], check=True)
        judges[model] = {}
        for prompt in args.prompts:
            run_dir = run_dir_of(model, prompt)
            judgments = pl.read_parquet(run_dir / "judge" / "judgments.parquet")
            report = json.loads((run_dir / "judge" / "report.json").read_text())
            judges[model][prompt] = {
                "pairs": judgments.height,
                "failures": report["failures"],
                "pairs_per_s": report["pairs_per_second"],
                "rows": orderings(run_dir, judgments, args.k),
            }
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "documents": SELECT_DOCUMENTS,
        "k": args.k,
        "backend": f"{args.backend} {BACKENDS[args.backend][1]}",
        "judges": judges,
        "chosen": choose(judges),
    }
    out = REPO / "benchmarks" / "results"
    write_json(out / "teacher-debtags-dev.json", result)
    write_text(out / "teacher-debtags-dev.md", markdown(result))
    print(markdown(result))


def choose(judges: dict[str, dict[str, dict]]) -> dict[str, object]:
    """Judge, prompt, k and teacher with the largest mean nDCG@5 gain over the student's own order."""
    options = [
        (row["vs student"]["nDCG@5"]["difference"], model, prompt, name)
        for model, tables in judges.items()
        for prompt, table in tables.items()
        for name, row in table["rows"].items()
        if "vs student" in row
    ]
    gain, model, prompt, name = max(options)
    k, _, teacher = name.partition(" ")
    return {"judge": model, "prompt": prompt, "k": int(k.removeprefix("top-")), "teacher": teacher, "gain": gain}


def markdown(result: dict) -> str:
    """The dev ordering table."""
    lines = ["# The judge as a teacher: candidate orderings on debtags dev", ""]
    lines += [
        f"Generated by `python benchmarks/teacher_debtags.py` on {result['date']}: {result['documents']} random "
        "debtags dev packages (`data/debtags/dev-select.jsonl.gz`, disjoint from the training packages), the "
        f"zero-shot student's top-{result['k']} tags, judged by each judge (backend {result['backend']}) on this "
        "2-core CPU with the `yes-no` template. Intervals: 95% paired bootstrap of the per-package difference to "
        "the student's own order of the same candidates (1,000 resamples).",
        "",
        "| judge | label prompt | ordering | P@1 | P@1 vs student | nDCG@5 | nDCG@5 vs student |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for model, tables in result["judges"].items():
        for prompt, table in tables.items():
            for name, row in table["rows"].items():
                versus = row.get("vs student")
                cells = [f"{row['P@1']:.4f}", "-", f"{row['nDCG@5']:.4f}", "-"]
                if versus:
                    for index, metric in ((1, "P@1"), (3, "nDCG@5")):
                        v = versus[metric]
                        cells[index] = f"{v['difference']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]"
                lines.append(f"| {model} | {prompt} | {name} | " + " | ".join(cells) + " |")
    chosen = result["chosen"]
    lines += [
        "",
        f"Chosen on dev (largest nDCG@5 gain over the student): judge `{chosen['judge']}`, label prompt "
        f"`{chosen['prompt']}`, k = {chosen['k']}, teacher `{chosen['teacher']}` ({chosen['gain']:+.4f}).",
        "",
        "Speed and failures per run:",
        "",
        "| judge | label prompt | pairs | failures | pairs/s |",
        "|---|---|---:|---:|---:|",
    ]
    for model, tables in result["judges"].items():
        for prompt, table in tables.items():
            lines.append(f"| {model} | {prompt} | {table['pairs']} | {table['failures']} | {table['pairs_per_s']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # vLLM spawns its workers: the engine must start under this guard
    main()
