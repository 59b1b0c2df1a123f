"""How many tags per document on debtags: calibrated, label-free rules against rules chosen with labels.

    python benchmarks/calibrate_debtags.py     # writes benchmarks/results/calibrate-debtags[-JUDGE].{json,md}, PNGs

(-JUDGE: the cold-start pipeline's judge model, left out for SmolLM2-135M, the judge of the first results.)

1. Dev: pipelines/cold-start.toml (its judge on 200 random dev packages x 8 candidates, distil, calibrate
   on the judged pairs re-scored by the distilled encoder, tag, evaluate) in runs/calibrate-bench/dev. The
   calibrator never reads labels; the dev labels are read here only to choose the oracle rows (best fixed k and
   best global cosine threshold for example-based F1) and to measure how well the judge's own P(yes) and the
   calibrated probabilities match the truth (ECE, reliability plots).
2. Test (5,735 packages): the distilled encoder tags with the dev calibrator (exact index, top 100); every rule
   is applied to the same ranked lists with tag.select: (a) best fixed k and (b) best cosine threshold, both
   chosen on dev; (c) today's nightly default (threshold 0.25, 1-10 per document), on these lists and on the
   zero-shot encoder's (today's nightly encoder); (d) calibrated probability
   >= 0.5 and (e) expected F1, both label-free, 1-10 per document. 95% bootstrap intervals over documents
   (1,000 resamples), paired for the differences.
3. Calibrator variants (isotonic; logistic on the score; logistic on score and log rank; fitted to the stage's
   latent-class targets or to the judge's P(yes)), fitted on the same judged pairs: held-out fit to their targets
   and the test F1 of rules (d) and (e). And, to separate the method from
   its teacher, the same isotonic map fitted to the dev *labels* of the judged pairs (an oracle teacher).
Every stage is cached in runs/calibrate-bench and the judge cache in runs/judge-cache.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl

from eztag import calibration, metrics, plots
from eztag.artifacts import RunDir, write_json, write_text
from eztag.devices import host_line
from eztag.pipeline import Pipeline
from eztag.stages import tag
from eztag.stages.evaluate import label_sets

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "calibrate-bench"
DEV = RUNS / "dev"
TEST = RUNS / "test"
TEST_ZERO_SHOT = RUNS / "test-zero-shot"
COLD_START = REPO / "pipelines" / "cold-start.toml"
TEST_PIPELINE = REPO / "pipelines" / "recall-benchmark.toml"
OUT = REPO / "benchmarks" / "results"
LIMITS = {"min_per_doc": 1, "max_per_doc": 10}
KS = range(1, 11)
THRESHOLDS = np.round(np.arange(0.10, 0.80, 0.01), 2)
RESAMPLES = 1000
SHIPPED_RULE = "(d) calibrated probability >= 0.5"  # [tag] rule and min_probability of pipelines/cold-start.toml


@dataclasses.dataclass
class RankedLists:
    """The top-100 lists of one split: [documents, 100] scores and ranks' label rows, and the gold label rows."""

    scores: np.ndarray
    label_rows: np.ndarray
    gold: list[set[int]]

    @classmethod
    def read(cls, run_dir: Path) -> RankedLists:
        ingest_dir = run_dir / "ingest"
        tags = pl.read_parquet(run_dir / "tag" / "tags.parquet")
        documents = pl.read_parquet(ingest_dir / "documents.parquet", columns=["doc_id"]).with_row_index("doc_row")
        labels = pl.read_parquet(ingest_dir / "labels.parquet", columns=["label_id"]).with_row_index("label_row")
        joined = tags.join(documents, on="doc_id").join(labels, on="label_id")
        width = int(tags["rank"].max())
        scores = np.full((documents.height, width), -np.inf)
        rows = np.full((documents.height, width), -1, dtype=np.int64)
        at = joined["doc_row"].to_numpy(), joined["rank"].to_numpy() - 1
        scores[at], rows[at] = joined["score"].to_numpy(), joined["label_row"].to_numpy()
        gold = label_sets(ingest_dir, pl.read_parquet(ingest_dir / "ground_truth.parquet"))
        keep = [row for row, labels in enumerate(gold) if labels]
        return cls(scores[keep], rows[keep], [gold[row] for row in keep])

    def probabilities(self, calibrator: calibration.Calibrator) -> np.ndarray:
        return calibrator.predict(self.scores, np.arange(1, self.scores.shape[1] + 1)[None, :])

    def selected(self, config: tag.Config, calibrator: calibration.Calibrator | None = None) -> list[set[int]]:
        probabilities = self.probabilities(calibrator) if calibrator is not None else None
        mask = tag.select(self.scores, probabilities, config)
        return [set(row[keep].tolist()) for row, keep in zip(self.label_rows, mask, strict=True)]

    def f1(self, config: tag.Config, calibrator: calibration.Calibrator | None = None) -> np.ndarray:
        return metrics.example_f1(self.selected(config, calibrator), self.gold)


def interval(values: np.ndarray) -> list[float]:
    """95% bootstrap interval of the mean (1,000 resamples of the documents, seed 0)."""
    rng = np.random.default_rng(0)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(RESAMPLES)]
    return [round(float(value), 4) for value in np.percentile(means, [2.5, 97.5])]


def row(lists: RankedLists, config: tag.Config, calibrator: calibration.Calibrator | None = None) -> dict:
    """Set metrics of one rule on one split, example-based F1 with its interval, and the per-document F1."""
    selected = lists.selected(config, calibrator)
    values = metrics.set_metrics(selected, lists.gold)
    per_document = metrics.example_f1(selected, lists.gold)
    return {
        "rule": {key: value for key, value in dataclasses.asdict(config).items() if value is not None},
        **{key: round(value, 4) for key, value in values.items()},
        "example_F1_interval": interval(per_document),
        "per_document": per_document,
    }


def paired(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float | list[float]]:
    """Mean per-document F1 difference with its paired 95% bootstrap interval."""
    difference = ours - theirs
    return {"difference": round(float(difference.mean()), 4), "interval": interval(difference)}


def judged_with_truth(run_dir: Path) -> pl.DataFrame:
    """The calibrate stage's scored pairs with the dev ground truth (1 when the label is a gold label)."""
    pairs = pl.read_parquet(run_dir / "calibrate" / "pairs.parquet")
    truth = pl.read_parquet(run_dir / "ingest" / "ground_truth.parquet").with_columns(gold=pl.lit(1.0))
    return pairs.join(truth, on=["doc_id", "label_id"], how="left").with_columns(pl.col("gold").fill_null(0.0))


def teacher_calibration(pairs: pl.DataFrame, dev: RankedLists, calibrator: calibration.Calibrator, stem: str) -> dict:
    """Against the dev truth: the judge's P(yes) on its pairs, and the calibrated probabilities of the top 10."""
    gold = pairs["gold"].to_numpy()
    top = dev.probabilities(calibrator)[:, :10]
    hits = np.array(
        [[label in labels for label in row] for row, labels in zip(dev.label_rows[:, :10], dev.gold, strict=True)]
    )
    judge_points = calibration.reliability(pairs["p_yes"].to_numpy(), gold)
    calibrated_points = calibration.reliability(top.ravel(), hits.ravel().astype(float))
    figure, axes = plots.png_figure(5, 5)
    curves = {"judge P(yes), judged pairs": judge_points, "calibrated probability, dev top-10": calibrated_points}
    plots.draw_reliability(axes, curves, "predicted probability (bin mean)", "share of gold labels (dev ground truth)")
    plots.save_png(figure, OUT / f"{stem}-truth.png")
    return {
        "judged_pairs": len(gold),
        "gold_share_of_judged_pairs": round(float(gold.mean()), 4),
        "judge_mean_p_yes": round(float(pairs["p_yes"].mean()), 4),
        "judge_ece": round(calibration.expected_calibration_error(pairs["p_yes"].to_numpy(), gold), 4),
        "stage_target_mean": round(float(pairs["target"].mean()), 4),
        "stage_target_ece": round(calibration.expected_calibration_error(pairs["target"].to_numpy(), gold), 4),
        "judge_reliability": judge_points,
        "auc_judge_p_yes": auc(pairs["p_yes"].to_numpy(), gold),
        "auc_student_score": auc(pairs["score"].to_numpy(), gold),
        "calibrated_ece_dev_top10": round(calibration.expected_calibration_error(top.ravel(), hits.ravel()), 4),
        "calibrated_reliability_dev_top10": calibrated_points,
        "expected_gold_per_doc": round(float(np.nansum(dev.probabilities(calibrator), axis=1).mean()), 3),
    }


def auc(values: np.ndarray, gold: np.ndarray) -> float:
    """ROC AUC of `values` for the gold labels among the judged pairs."""
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(gold, values)), 4)


def variants(pairs: pl.DataFrame, identity: dict[str, str], test: RankedLists) -> dict[str, dict]:
    """Calibrator variants fitted on the same fit documents: held-out fit to their targets, test F1 of (d) and (e).
    `target`: the calibrate stage's (latent-class in the shipped pipeline)."""
    fit_part, check = pairs.filter(pl.col("split") == "fit"), pairs.filter(pl.col("split") == "check")
    out = {}
    settings = {
        "logistic + log rank, latent-class targets (the stage's default)": ("logistic", True, "target"),
        "isotonic, latent-class targets": ("isotonic", False, "target"),
        "logistic + log rank, the judge's P(yes) (target = judge)": ("logistic", True, "p_yes"),
        "logistic, the judge's P(yes)": ("logistic", False, "p_yes"),
        "isotonic, the judge's P(yes)": ("isotonic", False, "p_yes"),
        "isotonic fitted to dev labels (oracle teacher)": ("isotonic", False, "gold"),
        "logistic + log rank fitted to dev labels (oracle teacher)": ("logistic", True, "gold"),
    }
    for name, (method, use_rank, target) in settings.items():
        fitted = calibration.fit(
            fit_part["score"].to_numpy(),
            fit_part["rank"].to_numpy(),
            fit_part[target].to_numpy(),
            method,
            use_rank,
            identity,
        )
        predicted = fitted.predict(check["score"].to_numpy(), check["rank"].to_numpy())
        probability = row(test, tag.Config(rule="probability", **LIMITS), fitted)
        expected = row(test, tag.Config(rule="expected_f1", **LIMITS), fitted)
        out[name] = {
            "check_ece_vs_target": round(
                calibration.expected_calibration_error(predicted, check[target].to_numpy()), 4
            ),
            "check_brier_vs_target": round(float(np.mean((predicted - check[target].to_numpy()) ** 2)), 5),
            "probability>=0.5": {
                key: probability[key] for key in ("example_F1", "example_F1_interval", "tags_per_doc")
            },
            "expected_f1": {key: expected[key] for key in ("example_F1", "example_F1_interval", "tags_per_doc")},
        }
    return out


def cold_start_share(run_dir: Path) -> dict:
    """Seconds of each stage of the dev cold-start run (manifest) and the calibrate stage's share."""
    stages = RunDir(run_dir).manifest()["stages"]
    seconds = {name: record["seconds"] for name, record in stages.items()}
    total = sum(seconds.values())
    return {"seconds": seconds, "calibrate_share": round(seconds["calibrate"] / total, 4)}


def reliability_rows(points: list[dict]) -> list[str]:
    """Markdown rows (bin mean, observed share, count) of reliability points."""
    return [f"| {p['probability']:.3f} | {p['observed']:.3f} | {p['count']} |" for p in points]


def markdown(result: dict) -> str:
    lines = ["# How many tags per document: calibrated, label-free rules on debtags", ""]
    lines += [f"Generated by `python benchmarks/calibrate_debtags.py` on {result['date']}. {result['note']}", ""]
    lines += [
        f"## Test split ({result['test_documents']:,} packages with tags, gold {result['gold_per_doc']:.2f} tags each)",
        "",
    ]
    lines += ["Example-based F1 with its 95% bootstrap interval (1,000 resamples of the documents).", ""]
    lines += ["| rule | chosen with | example F1 [95% CI] | micro-F1 | macro-F1 | P | R | tags/doc |"]
    lines += ["|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, values in result["test"].items():
        low, high = values["example_F1_interval"]
        shipped = " (shipped: pipelines/cold-start.toml)" if name == SHIPPED_RULE else ""
        lines.append(
            f"| {name}{shipped} | {values['chosen_with']} | {values['example_F1']:.4f} [{low:.4f}, {high:.4f}] | "
            f"{values['micro_F1']:.4f} | {values['macro_F1']:.4f} | {values['example_P']:.4f} | "
            f"{values['example_R']:.4f} | {values['tags_per_doc']:.2f} |"
        )
    lines += ["", "Paired differences in example F1 (mean over documents, 95% paired bootstrap interval):", ""]
    for name, values in result["differences"].items():
        low, high = values["interval"]
        lines.append(f"- {name}: {values['difference']:+.4f} [{low:+.4f}, {high:+.4f}]")
    goals = result["goals"]
    lines += ["", "## Goals", ""]
    for name, value in goals.items():
        lines.append(f"- {name}: {value}")
    truth = result["truth_on_dev"]
    lines += ["", "## Is the teacher calibrated? Dev ground truth on the judged pairs", ""]
    lines += [
        f"{truth['judged_pairs']} judged pairs (the calibration set); "
        f"{truth['gold_share_of_judged_pairs']:.1%} of them are gold labels, the judge's mean P(yes) is "
        f"{truth['judge_mean_p_yes']:.3f}: judge ECE "
        f"{truth['judge_ece']:.4f}; the calibrate stage's targets have mean {truth['stage_target_mean']:.3f}, ECE "
        f"{truth['stage_target_ece']:.4f}. ROC AUC for the gold labels among these pairs: judge P(yes) "
        f"{truth['auc_judge_p_yes']}, distilled student's score {truth['auc_student_score']}. The calibrated "
        f"probabilities of the dev top-10 tags: ECE {truth['calibrated_ece_dev_top10']:.4f} against the truth; "
        f"expected gold labels per document (sum over the top 100) {truth['expected_gold_per_doc']} "
        f"(truth: {result['dev_gold_per_doc']:.2f}). Plot: `{result['stem']}-truth.png`.",
        "",
        "| judge P(yes) bin mean | share gold | pairs |",
        "|---:|---:|---:|",
    ]
    lines += reliability_rows(truth["judge_reliability"])
    lines += ["", "| calibrated probability bin mean (dev top 10) | share gold | tags |", "|---:|---:|---:|"]
    lines += reliability_rows(truth["calibrated_reliability_dev_top10"])
    stage = result["calibrate_stage"]
    lines += ["", "## The calibrate stage (dev run, label-free)", ""]
    lines += [
        f"{stage['pairs']} judged pairs re-scored by the distilled encoder ({stage['documents']['fit']} documents "
        f"to fit, {stage['documents']['check']} to check); Spearman(score, P(yes)) {stage['spearman_score_p_yes']}. "
        f"Targets: {stage['target']} ({stage['latent_class']}; the judge's mean P(yes) {stage['judge_mean_p_yes']}). "
        f"Held-out ECE against the targets: calibrator {stage['check']['ece']}, constant (fit-set mean "
        f"{stage['fit_mean_target']}) {stage['check']['constant_ece']}; Brier {stage['check']['brier']} vs "
        f"{stage['check']['constant_brier']}. Plot: `{result['stem']}-judge-fit.png` (the stage's "
        f"`calibrate/reliability.png`). Fitted map: {result['calibrator']} (coefficients of score and log rank; a "
        "coefficient of 0 is a feature dropped because it came out with the wrong sign).",
        "",
        "| calibrator | held-out ECE vs its target | Brier | (d) p>=0.5: test F1 [CI], tags/doc "
        "| (e) expected F1: test F1 [CI], tags/doc |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in result["variants"].items():
        cells = []
        for rule in ("probability>=0.5", "expected_f1"):
            part = values[rule]
            low, high = part["example_F1_interval"]
            cells.append(f"{part['example_F1']:.4f} [{low:.4f}, {high:.4f}], {part['tags_per_doc']:.2f}")
        fit = f"{values['check_ece_vs_target']} | {values['check_brier_vs_target']}"
        lines.append(f"| {name} | {fit} | {cells[0]} | {cells[1]} |")
    share = result["cold_start"]
    lines += ["", "## Cost", ""]
    lines += [
        f"Stage seconds of the dev cold-start run (one run, manifest): {share['seconds']}; calibrate's share "
        f"{share['calibrate_share']:.2%}. A stage resumed after a pause records only its last piece, so the "
        "total is a lower bound and the share an upper bound.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    started = time.perf_counter()
    cold_start = Pipeline.load(COLD_START)
    cold_start.run(DEV)
    judge = cold_start.configs["judge"].model
    stem = "calibrate-debtags" + ("" if judge == "smollm2-135m" else f"-{judge}")
    model, calibrator_path = DEV / "distil" / "model", DEV / "calibrate" / "calibrator.json"
    overrides = [
        f'encode.model="{model}"',
        "tag.k=100",
        'tag.rule="expected_f1"',
        "tag.min_per_doc=1",
        "tag.max_per_doc=10",
        f'tag.calibrator="{calibrator_path}"',
    ]
    Pipeline.load(TEST_PIPELINE, overrides).run(TEST)
    Pipeline.load(TEST_PIPELINE).run(TEST_ZERO_SHOT)
    calibrator = calibration.load(calibrator_path)
    dev, test = RankedLists.read(DEV), RankedLists.read(TEST)
    zero_shot = RankedLists.read(TEST_ZERO_SHOT)

    def best(choices: list[tag.Config]) -> tag.Config:
        return max(choices, key=lambda config: dev.f1(config).mean())

    fixed_k = best([tag.Config(rule="top_k", top_k=k) for k in KS])
    threshold = best([tag.Config(rule="threshold", threshold=float(t), **LIMITS) for t in THRESHOLDS])
    nightly_rule = tag.Config(rule="threshold", threshold=0.25, **LIMITS)
    rules = {
        "(a) best fixed k": (fixed_k, None, "dev labels"),
        "(b) best cosine threshold": (threshold, None, "dev labels"),
        "(c) nightly default: threshold 0.25": (nightly_rule, None, "-"),
        SHIPPED_RULE: (tag.Config(rule="probability", **LIMITS), calibrator, "none (judge)"),
        "(e) expected F1": (tag.Config(rule="expected_f1", **LIMITS), calibrator, "none (judge)"),
    }
    rows = {}
    for name, (config, used, chosen_with) in rules.items():
        rows[name] = {**row(test, config, used), "chosen_with": chosen_with}
    rows["(c) same, zero-shot encoder (today's nightly)"] = {**row(zero_shot, nightly_rule), "chosen_with": "-"}
    # the tag stage's own selection (rule (e)) gives the figures computed here
    from_stage = json.loads((TEST / "evaluate" / "metrics.json").read_text())["set_metrics"]
    assert abs(from_stage["example_F1"] - rows["(e) expected F1"]["example_F1"]) < 1e-3, from_stage
    oracle = max(("(a) best fixed k", "(b) best cosine threshold"), key=lambda name: rows[name]["example_F1"])
    free = max((SHIPPED_RULE, "(e) expected F1"), key=lambda name: rows[name]["example_F1"])
    nightlies = ("(c) nightly default: threshold 0.25", "(c) same, zero-shot encoder (today's nightly)")
    gold_per_doc = float(np.mean([len(labels) for labels in test.gold]))
    differences = {
        f"{free} - {other}": paired(rows[free]["per_document"], rows[other]["per_document"])
        for other in (oracle, *nightlies)
    }
    pairs = judged_with_truth(DEV)
    stage_report = json.loads((DEV / "calibrate" / "report.json").read_text())
    share = cold_start_share(DEV)
    ratio = rows[free]["example_F1"] / rows[oracle]["example_F1"]
    beats = [differences[f"{free} - {other}"] for other in nightlies]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "note": (
            f"{host_line()}; judge {judge} on 200 "
            "dev packages x 8 "
            "candidates; encoder all-MiniLM-L6-v2 distilled by pipelines/cold-start.toml; calibrator fitted on the "
            "judged pairs (no labels). Dev labels choose rows (a) and (b) only; test labels are read only here."
        ),
        "test_documents": len(test.gold),
        "gold_per_doc": gold_per_doc,
        "dev_gold_per_doc": float(np.mean([len(labels) for labels in dev.gold])),
        "test": {name: {k: v for k, v in values.items() if k != "per_document"} for name, values in rows.items()},
        "differences": differences,
        "goals": {
            f"better label-free rule {free} reaches >= 95% of the best oracle {oracle}": (
                f"{ratio:.1%} of it: {'met' if ratio >= 0.95 else 'NOT met'}"
            ),
            "beats the nightly default (both rows (c))": (
                ", ".join(f"{value['difference']:+.4f}" for value in beats)
                + f": {'met' if all(value['interval'][0] > 0 for value in beats) else 'NOT met'}"
            ),
            "mean tags per document within 25% of gold": (
                f"{rows[free]['tags_per_doc']:.2f} vs {gold_per_doc:.2f} "
                f"({rows[free]['tags_per_doc'] / gold_per_doc - 1:+.1%}): "
                f"{'met' if abs(rows[free]['tags_per_doc'] / gold_per_doc - 1) <= 0.25 else 'NOT met'}"
            ),
            "calibrate adds < 5% to the cold-start run": (
                f"{share['calibrate_share']:.2%}: {'met' if share['calibrate_share'] < 0.05 else 'NOT met'}"
            ),
        },
        "stem": stem,
        "truth_on_dev": teacher_calibration(pairs, dev, calibrator, stem),
        "calibrate_stage": stage_report,
        "calibrator": {key: getattr(calibrator, key) for key in ("method", "use_rank", "coef", "intercept")},
        "variants": variants(
            pairs, {"encoder_hash": calibrator.encoder_hash, "labels_hash": calibrator.labels_hash}, test
        ),
        "cold_start": share,
        "seconds": round(time.perf_counter() - started, 1),
    }
    shutil.copyfile(DEV / "calibrate" / "reliability.png", OUT / f"{stem}-judge-fit.png")
    write_json(OUT / f"{stem}.json", result)
    write_text(OUT / f"{stem}.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
