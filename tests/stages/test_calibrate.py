"""Calibration and tag selection: hand-checked rules and metrics, the calibrate stage on a real (tiny) judge, and
every bad calibrator input as a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from eztag import calibration, metrics
from eztag.errors import EztagError
from eztag.stages import tag
from tests.conftest import assert_one_line_error, eztag, pipeline_file, run_cli, write_jsonl
from tests.stages.test_judge_stage import judge_pipeline

IDENTITY = {"encoder_hash": "e" * 64, "labels_hash": "l" * 64}


def test_expected_f1_cutoff_by_hand() -> None:
    # p = 0.9, 0.8, 0.1 (sum 1.8): E[F1] = 1.8/2.8 = 0.643 (c=1), 3.4/3.8 = 0.895 (c=2), 3.6/4.8 = 0.75 (c=3)
    # p = 0.3, 0.3, 0.3, 0.3 (sum 1.2): 0.6/2.2 = 0.273, 1.2/3.2 = 0.375, 1.8/4.2 = 0.429, 2.4/5.2 = 0.462
    # p = 0.9, then NaN (a list of one label): c = 1
    probabilities = np.array([[0.9, 0.8, 0.1, 0.0], [0.3, 0.3, 0.3, 0.3], [0.9, np.nan, np.nan, np.nan]])
    assert tag.expected_f1_cutoffs(probabilities, 0, 4).tolist() == [2, 4, 1]
    assert tag.expected_f1_cutoffs(probabilities, 0, 3).tolist() == [2, 3, 1]
    assert tag.expected_f1_cutoffs(probabilities, 3, 4).tolist() == [3, 4, 3]
    assert tag.expected_f1_cutoffs(np.zeros((1, 3)), 0, 3).tolist() == [0]


def test_selection_rules() -> None:
    scores = np.array([[0.6, 0.4, 0.3, 0.1], [0.2, 0.1, -np.inf, -np.inf]])
    probabilities = np.array([[0.9, 0.8, 0.1, 0.0], [0.4, 0.3, np.nan, np.nan]])

    def kept(**settings: object) -> list[int]:
        return tag.select(scores, probabilities, tag.Config(k=4, **settings)).sum(axis=1).tolist()

    assert kept() == kept(rule="probability") == [2, 0]  # "auto" with probabilities: min_probability 0.5
    auto_uncalibrated = tag.select(scores, None, tag.Config(k=4, top_k=3)).sum(axis=1).tolist()
    assert auto_uncalibrated == kept(rule="top_k", top_k=3) == [3, 2]  # "auto" without: the first top_k
    assert kept(rule="top_k") == [4, 2]  # top_k (5) past the list's end keeps the whole list
    assert kept(rule="top_k", top_k=5, max_per_doc=3) == [3, 2]
    assert kept(rule="threshold", threshold=0.35) == [2, 0]
    assert kept(rule="threshold", threshold=0.35, min_per_doc=1) == [2, 1]
    assert kept(rule="probability", min_probability=0.5) == [2, 0]
    assert kept(rule="probability", min_probability=0.35) == [2, 1]
    # doc 2: p = 0.4, 0.3 (sum 0.7): E[F1] = 0.8/1.7 = 0.47 (c=1), 1.4/2.7 = 0.52 (c=2)
    assert kept(rule="expected_f1") == [2, 2]
    assert kept(rule="expected_f1", max_per_doc=1) == [1, 1]


def test_rule_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="rule = 'threshold'"):
        tag.Config(rule="threshold")
    with pytest.raises(ValueError, match="rule = 'threshold'"):
        tag.Config(threshold=0.2)
    with pytest.raises(ValueError, match="ConSE"):
        tag.Config(calibrator="c.json", conse=tag.ConSE())


def test_set_metrics_by_hand() -> None:
    # doc 0: S = {0, 1}, G = {0, 2}: F1 = 2*1/4;  doc 1: S = {}, G = {3}: F1 = 0;  doc 2: no gold, left out
    selected, gold = [{0, 1}, set(), {1}], [{0, 2}, {3}, set()]
    values = metrics.set_metrics(selected, gold)
    assert tuple(values) == metrics.SET_METRICS  # the names a sweep may choose by
    assert values["example_F1"] == pytest.approx((0.5 + 0.0) / 2)
    assert values["example_P"] == pytest.approx((0.5 + 0.0) / 2)
    assert values["example_R"] == pytest.approx((0.5 + 0.0) / 2)
    assert values["micro_F1"] == pytest.approx(2 * 1 / (2 + 3))
    # labels 0 (F1 1), 1 (selected once, never gold: 0), 2 (gold, missed: 0), 3 (gold, missed: 0)
    assert values["macro_F1"] == pytest.approx(1 / 4)
    assert values["tags_per_doc"] == pytest.approx(1.0) and values["gold_per_doc"] == pytest.approx(1.5)
    assert metrics.example_f1(selected, gold).tolist() == pytest.approx([0.5, 0.0])


def test_ece_by_hand() -> None:
    # bin [0.1, 0.2): 2 pairs, mean p 0.15, mean target 0.5; bin [0.9, 1]: 2 pairs, mean p 0.95, mean target 1
    probabilities, targets = np.array([0.1, 0.2 - 1e-9, 0.9, 1.0]), np.array([0, 1, 1, 1])
    assert calibration.expected_calibration_error(probabilities, targets) == pytest.approx(
        0.5 * 0.35 + 0.5 * 0.05, abs=1e-6
    )


@pytest.mark.parametrize("use_rank", [False, True])
def test_fitted_map_is_monotone_and_matches_sklearn(tmp_path: Path, use_rank: bool) -> None:
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 500)
    ranks = rng.integers(1, 20, 500)
    targets = np.clip(scores**2 + rng.normal(0, 0.05, 500), 0, 1)
    method = "logistic" if use_rank else "isotonic"
    calibrator = calibration.fit(scores, ranks, targets, method, use_rank, IDENTITY)
    calibration.save(calibrator, tmp_path / "c.json")
    loaded = calibration.load(tmp_path / "c.json", IDENTITY)
    grid = np.linspace(-0.5, 1.5, 201)
    predicted = loaded.predict(grid, np.ones_like(grid))
    assert np.all(np.diff(predicted) >= 0) and predicted.min() >= 0 and predicted.max() <= 1
    assert loaded.predict(np.array([-np.inf]), np.array([1])).tolist() == [pytest.approx(np.nan, nan_ok=True)]
    if not use_rank:
        reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(scores, targets)
        assert predicted == pytest.approx(reference.predict(grid))
    # on the fitted data it is closer to the targets than their mean
    fitted = loaded.predict(scores, ranks)
    assert np.mean((fitted - targets) ** 2) < 0.5 * np.mean((targets.mean() - targets) ** 2)


def test_logistic_fit_stays_monotone() -> None:
    scores, ranks = np.linspace(0, 1, 200), np.arange(200, 0, -1)  # the best score has rank 1
    # the target falls with the score and rises with the rank: neither feature may enter with that sign
    calibrator = calibration.fit(scores, ranks, 1 - scores, "logistic", True, IDENTITY)
    assert calibrator.coef == [0.0, 0.0]
    assert calibrator.predict(scores, ranks) == pytest.approx(np.full(200, 0.5))
    rising = calibration.fit(scores, ranks, scores, "logistic", True, IDENTITY)
    assert rising.coef[0] > 0 and rising.coef[1] <= 0


def test_latent_class_targets_correct_a_lenient_judge() -> None:
    # 20% relevant pairs; the judge says yes to most of the others too (mean P(yes) ~0.7 over all pairs), the
    # student scores the relevant ones higher; given the class the two views are independent
    rng = np.random.default_rng(1)
    relevant = rng.random(4000) < 0.2
    log_odds = np.where(relevant, rng.normal(3.0, 0.8, 4000), rng.normal(0.8, 1.0, 4000))
    scores = np.where(relevant, rng.normal(0.5, 0.08, 4000), rng.normal(0.3, 0.08, 4000))
    p_yes = 1 / (1 + np.exp(-log_odds))
    targets, fit = calibration.latent_class_targets(log_odds, scores, seed=0)
    assert p_yes.mean() > 0.65 and fit["views_agree"]
    assert fit["relevant_share"] == pytest.approx(relevant.mean(), abs=0.03)
    assert targets.mean() == pytest.approx(relevant.mean(), abs=0.03)
    truth = relevant.astype(float)
    assert calibration.expected_calibration_error(targets, truth) < 0.05
    assert calibration.expected_calibration_error(p_yes, truth) > 0.3
    again, _ = calibration.latent_class_targets(log_odds, scores, seed=0)
    assert np.array_equal(targets, again)
    assert fit["separation"]["log_odds"] > 2 and fit["separation"]["score"] > 2
    # a student that scores the judge's relevant pairs lower, or hardly differently: said, not hidden
    assert not calibration.latent_class_targets(log_odds, -scores, seed=0)[1]["views_agree"]
    blurred = np.where(relevant, rng.normal(0.32, 0.08, 4000), rng.normal(0.3, 0.08, 4000))
    weak = calibration.latent_class_targets(log_odds, blurred, seed=0)[1]
    assert not weak["views_agree"] and weak["separation"]["score"] < calibration.MIN_SEPARATION


def test_calibrator_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "calibrator.json"
    with pytest.raises(EztagError, match="calibrator file not found") as missing:
        calibration.load(path)
    assert str(path) in str(missing.value) and "rerun the calibrate stage" in str(missing.value)
    path.write_text('{"method": "isotonic", "use_rank": fal')
    with pytest.raises(EztagError, match=r"corrupt calibrator \(not valid JSON\); rerun the calibrate stage"):
        calibration.load(path)
    path.write_text(json.dumps({"method": "isotonic", "use_rank": False, **IDENTITY, "thresholds": [0.5, 0.1]}))
    with pytest.raises(EztagError, match=r"corrupt calibrator .*non-decreasing"):
        calibration.load(path)
    calibration.save(
        calibration.fit(np.arange(3.0), np.ones(3), np.array([0, 0.5, 1]), "isotonic", False, IDENTITY), path
    )
    with pytest.raises(EztagError, match="fitted for another encoder"):
        calibration.load(path, {**IDENTITY, "encoder_hash": "f" * 64})
    with pytest.raises(EztagError, match="fitted for another indexed label set"):
        calibration.load(path, {**IDENTITY, "labels_hash": "f" * 64})


def calibrated_pipeline(tmp_path: Path, tiny_llama_dir: Path, tag_table: str, extra: str = "") -> Path:
    """40 documents x 6 mined labels judged by a tiny real LLM, calibrated, tagged."""
    path = judge_pipeline(tmp_path, tiny_llama_dir, documents=40, k=6)
    text = path.read_text().replace('"judge"]', '"judge", "calibrate", "tag"]')
    path.write_text(text + f"[calibrate]\nmin_pairs = 100\n{extra}[tag]\nk = 10\n{tag_table}", encoding="utf-8")
    return path


@pytest.mark.slow
def test_calibrate_then_tag_by_expected_f1(tmp_path: Path, tiny_llama_dir: Path) -> None:
    path = calibrated_pipeline(tmp_path, tiny_llama_dir, 'rule = "expected_f1"\nmax_per_doc = 5\n')
    truth = write_jsonl(  # each package's topic's first two tools (judge_pipeline: 20 tools over 7 topics)
        tmp_path / "truth.jsonl", [{"doc_id": f"p{i}", "label_id": f"t{i % 7 + j}"} for i in range(40) for j in (0, 7)]
    )
    text = path.read_text().replace('"tag"]', '"tag", "evaluate"]')
    path.write_text(text.replace("[ingest]\n", f'[ingest]\nground_truth = "{truth}"\n'), encoding="utf-8")
    run_dir = tmp_path / "run"
    run_cli("run", str(path), "--run-dir", str(run_dir))
    report = json.loads((run_dir / "calibrate" / "report.json").read_text())
    assert report["pairs"] == 240 and report["documents"] == {"fit": 28, "check": 12}
    assert report["target"] == "latent-class" and 0 < report["latent_class"]["relevant_share"] < 1
    assert 0 <= report["check"]["ece"] <= 1 and report["check"]["reliability"]
    assert (run_dir / "calibrate" / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    pairs = pl.read_parquet(run_dir / "calibrate" / "pairs.parquet")
    judged = pl.read_parquet(run_dir / "judge" / "judgments.parquet")
    # re-scored by the tagging encoder: the same scores the student gave at mining (no distil here)
    joined = pairs.join(judged, on=["doc_id", "label_id"])
    assert joined["score"].to_numpy() == pytest.approx(joined["student_score"].to_numpy(), abs=1e-5)
    assert (joined["rank"] == joined["student_rank"]).all()

    tags = pl.read_parquet(run_dir / "tag" / "tags.parquet")
    assert tags.columns == ["doc_id", "rank", "label_id", "score", "probability", "selected"]
    assert tags.height == 400
    calibrator = calibration.load(run_dir / "calibrate" / "calibrator.json")
    expected = calibrator.predict(tags["score"].to_numpy(), tags["rank"].to_numpy())
    assert tags["probability"].to_numpy() == pytest.approx(expected, abs=1e-6)
    for (doc_id,), group in tags.sort("rank").group_by("doc_id"):
        probabilities = group["probability"].to_numpy()[None, :]
        cutoff = tag.expected_f1_cutoffs(probabilities, 0, 5)[0]
        assert group["selected"].to_list() == [rank <= cutoff for rank in group["rank"]], doc_id
    # evaluate checks the probabilities against the ground truth: ECE of the first 10 tags, expected vs gold count
    checked = json.loads((run_dir / "evaluate" / "metrics.json").read_text())["probabilities"]
    truth = pl.read_parquet(run_dir / "ingest" / "ground_truth.parquet").unique()
    top = tags.filter(pl.col("rank") <= 10).join(
        truth.with_columns(gold=pl.lit(1.0)), on=["doc_id", "label_id"], how="left"
    )
    gold = top["gold"].fill_null(0.0).to_numpy()
    assert checked["ece"] == pytest.approx(
        calibration.expected_calibration_error(top["probability"].to_numpy(), gold), abs=1e-4
    )
    documents = truth["doc_id"].n_unique()
    in_truth = tags.filter(pl.col("doc_id").is_in(truth["doc_id"].implode()))
    assert checked["expected_per_doc"] == pytest.approx(in_truth["probability"].sum() / documents, abs=1e-4)
    assert checked["gold_per_doc"] == pytest.approx(truth.height / documents, abs=1e-4)
    assert (
        sum(point["count"] for point in checked["reliability"])
        == top.filter(pl.col("doc_id").is_in(truth["doc_id"].implode())).height
    )
    assert "Calibrated probabilities of the first 10 tags" in (run_dir / "evaluate" / "metrics.md").read_text()
    compared = run_cli("compare", str(run_dir), "--out", str(tmp_path / "compared")).stdout
    row = f"| run | {checked['ece']:.4f} | {checked['expected_per_doc']:.2f} | {checked['gold_per_doc']:.2f} |"
    assert row in compared.splitlines()
    matrix = sp.load_npz(run_dir / "tag" / "tags.npz")
    selected = tags.filter(pl.col("selected"))
    assert matrix.nnz == selected.height
    assert sorted(matrix.data.tolist()) == pytest.approx(sorted(selected["probability"].to_list()), abs=1e-6)


@pytest.mark.slow
def test_bad_calibrator_inputs_are_one_line_errors(tmp_path: Path, tiny_llama_dir: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    from eztag.models import resolve_encoder

    path = calibrated_pipeline(tmp_path, tiny_llama_dir, 'rule = "probability"\nmin_probability = 0.4\n')
    run_dir = tmp_path / "run"
    # too few pairs: 40 x 6 = 240 judged
    run_cli("judge", str(path), "--run-dir", str(run_dir))
    few = eztag("calibrate", str(path), "--run-dir", str(run_dir), "--set", "calibrate.min_pairs=500")
    assert_one_line_error(
        few, "judge/judgments.parquet", "240 judged pairs", "at least 500 pairs", "mine.documents_limit"
    )
    run_cli("run", str(path), "--run-dir", str(run_dir))
    made = run_dir / "calibrate" / "calibrator.json"

    # a nightly-style pipeline that tags with a calibrator file
    def nightly(calibrator: Path, model: str = "default") -> Path:
        text = path.read_text().split("[calibrate]")[0].replace(', "mine", "judge", "calibrate"', "")
        text = text.split("[mine]")[0] + f'[encode]\nmodel = "{model}"\n'
        text += f'[tag]\nk = 10\nrule = "probability"\ncalibrator = "{calibrator}"\n'
        nightly_path = tmp_path / "nightly.toml"
        nightly_path.write_text(text, encoding="utf-8")
        return nightly_path

    ok = run_cli("run", str(nightly(made)), "--run-dir", str(tmp_path / "night"))
    assert "[tag] done" in ok.stdout
    # the same calibrator from `eztag tag DOCUMENTS LABELS`: probabilities, and those >= 0.5 selected (rule auto)
    own = ["tag", "docs.jsonl", "labels.jsonl", "--calibrator", str(made), "--run-dir", "quick"]
    run_cli(*own, "--out", "tags.csv", cwd=tmp_path)
    quick = pl.read_csv(tmp_path / "tags.csv")
    assert quick.columns == ["doc_id", "rank", "label_id", "label", "score", "probability", "selected"]
    assert quick.height == 40 * 10
    expected = calibration.load(made).predict(quick["score"].to_numpy(), quick["rank"].to_numpy())
    assert quick["probability"].to_numpy() == pytest.approx(expected, abs=1e-6)
    assert quick["selected"].to_list() == (quick["probability"] >= 0.5).to_list()
    missing = tmp_path / "nowhere" / "calibrator.json"
    result = eztag("run", str(nightly(missing)), "--run-dir", str(tmp_path / "night"))
    assert_one_line_error(result, str(missing), "calibrator file not found", "rerun the calibrate stage")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_bytes(made.read_bytes()[:50])
    result = eztag("run", str(nightly(corrupt)), "--run-dir", str(tmp_path / "night"))
    assert_one_line_error(result, str(corrupt), "corrupt calibrator", "rerun the calibrate stage")
    # another encoder: the default one with one weight changed, saved to its own folder
    model = SentenceTransformer(resolve_encoder("default"), device="cpu")
    with torch.no_grad():
        next(model.parameters())[0, 0] += 0.01
    model.save(str(tmp_path / "other-encoder"))
    other = nightly(made, str(tmp_path / "other-encoder"))
    run_cli("index", str(other), "--run-dir", str(tmp_path / "night2"))
    result = eztag("run", str(other), "--run-dir", str(tmp_path / "night2"))
    assert_one_line_error(result, str(made), "fitted for another encoder", "rerun the calibrate stage")
    result = eztag(*own, "--model", str(tmp_path / "other-encoder"), "--out", "other.csv", cwd=tmp_path)
    assert_one_line_error(result, str(made), "fitted for another encoder")
    assert not (tmp_path / "other.csv").exists()


@pytest.mark.slow
def test_evaluate_reports_set_metrics(tmp_path: Path, small_inputs: tuple[Path, Path]) -> None:
    config = pipeline_file(tmp_path, *small_inputs, extra="[tag]\nk = 3\nmax_per_doc = 1\n")
    run_cli("run", str(config))
    run_dir = tmp_path / "run"
    result = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    tags = pl.read_parquet(run_dir / "tag" / "tags.parquet")
    gold = {"d1": {"audio", "video"}, "d2": {"audio"}, "d3": {"devel"}, "d4": {"devel"}, "d5": {"game"}, "d6": {"game"}}
    top1 = dict(tags.filter(pl.col("selected")).select("doc_id", "label_id").iter_rows())
    hits = [top1[doc] in labels for doc, labels in gold.items()]
    f1 = [2 * hit / (1 + len(gold[doc])) for doc, hit in zip(gold, hits, strict=True)]
    assert result["set_metrics"]["example_F1"] == pytest.approx(np.mean(f1))
    assert result["set_metrics"]["tags_per_doc"] == 1.0
    assert "Selected tags" in (run_dir / "evaluate" / "metrics.md").read_text()
