"""Metrics against values computed by hand."""

import math

import numpy as np
import pytest

from eztag import metrics


def test_precision_recall_ndcg_by_hand() -> None:
    # doc 0: gold {0, 2}; ranking 0 (hit), 1 (miss), 2 (hit)
    # doc 1: gold {3};    ranking 1 (miss), 3 (hit), -1
    predicted = np.array([[0, 1, 2], [1, 3, -1]])
    gold = [{0, 2}, {3}]
    values = metrics.evaluate(predicted, gold, n_labels=4, ks=(1, 3))
    assert values["P@1"] == pytest.approx((1 + 0) / 2)
    assert values["P@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert values["R@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert values["R@3"] == pytest.approx((1 + 1) / 2)
    dcg0 = 1 + 1 / math.log2(4)
    idcg0 = 1 + 1 / math.log2(3)
    dcg1 = 1 / math.log2(3)
    assert values["nDCG@3"] == pytest.approx((dcg0 / idcg0 + dcg1 / 1) / 2)
    assert values["nDCG@1"] == pytest.approx((1 + 0) / 2)
    assert values["coverage@1"] == pytest.approx(1 / 3)
    assert values["coverage@3"] == pytest.approx(1.0)


def test_documents_without_gold_are_not_averaged() -> None:
    predicted = np.array([[0], [1]])
    values = metrics.evaluate(predicted, [{0}, set()], n_labels=2, ks=(1,))
    assert values["P@1"] == 1.0


def test_propensity_formula() -> None:
    counts = np.array([0.0, 1.0, 100.0])
    n, a, b = 1000, 0.55, 1.5
    c = (math.log(n) - 1) * (b + 1) ** a
    expected = [1 / (1 + c * (count + b) ** -a) for count in counts]
    assert metrics.propensities(counts, n, a, b) == pytest.approx(expected)


def test_psp_is_one_for_a_perfect_ranking_and_favours_rare_labels() -> None:
    gold = [{0}, {0}, {0}, {1}]  # label 1 is rarer
    perfect = np.array([[0, 1], [0, 1], [0, 1], [1, 0]])
    assert metrics.evaluate(perfect, gold, 2, ks=(1,))["PSP@1"] == pytest.approx(1.0)
    miss_rare = np.array([[0, 1], [0, 1], [0, 1], [0, 1]])
    miss_common = np.array([[1, 0], [0, 1], [0, 1], [1, 0]])
    psp_rare = metrics.evaluate(miss_rare, gold, 2, ks=(1,))["PSP@1"]
    psp_common = metrics.evaluate(miss_common, gold, 2, ks=(1,))["PSP@1"]
    # both rankings make one mistake at rank 1; missing the rare label costs more
    assert psp_rare < psp_common < 1.0


def test_psp_propensities_from_given_label_frequencies() -> None:
    gold = [{0}, {0}, {0}, {1}]  # label 1 is rarer among the evaluated documents
    miss_1 = np.array([[0, 1], [0, 1], [0, 1], [0, 1]])
    miss_0 = np.array([[1, 0], [0, 1], [0, 1], [1, 0]])
    own = (np.array([3.0, 1.0]), 4)
    for predicted in (miss_1, miss_0):
        default = metrics.evaluate(predicted, gold, 2, ks=(1,))
        assert metrics.evaluate(predicted, gold, 2, ks=(1,), propensity_counts=own) == default
    # in the training labels label 0 is the rare one: now missing label 0 costs more
    training = (np.array([1.0, 300.0]), 1000)
    psp_miss_1 = metrics.evaluate(miss_1, gold, 2, ks=(1,), propensity_counts=training)["PSP@1"]
    psp_miss_0 = metrics.evaluate(miss_0, gold, 2, ks=(1,), propensity_counts=training)["PSP@1"]
    assert psp_miss_0 < psp_miss_1 < 1.0
    assert metrics.evaluate(miss_1, gold, 2, ks=(1,))["P@1"] == pytest.approx(0.75)


def test_recall_curve_is_cumulative() -> None:
    curve = metrics.recall_curve(np.array([[5, 0, 1]]), [{0, 1}])
    assert curve == pytest.approx([0.0, 0.5, 1.0])
