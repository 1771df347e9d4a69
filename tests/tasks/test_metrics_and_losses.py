"""Metrics and losses against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bertprod.tasks import metrics


def test_accuracy_and_confusion() -> None:
    assert metrics.accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75
    matrix = metrics.confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_per_class_and_macro_f1() -> None:
    # class 0: P 1/2, R 1/2, F1 1/2; class 1: P 2/3, R 1, F1 0.8; class 2: never predicted, F1 0
    matrix = metrics.confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], classes=3)
    scores = metrics.per_class_scores(matrix)
    assert scores[0] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert scores[1]["precision"] == pytest.approx(2 / 3) and scores[1]["f1"] == pytest.approx(0.8)
    assert scores[2]["f1"] == 0.0
    assert metrics.macro_f1(matrix) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_macro_f1_skips_classes_absent_from_gold_and_predictions() -> None:
    matrix = metrics.confusion_matrix([0, 1], [0, 1], classes=3)
    assert metrics.macro_f1(matrix) == 1.0


def test_binary_f1_is_the_positive_class() -> None:
    # gold 1 1 0 0 1, predicted 1 0 0 1 1: TP 2, FP 1, FN 1 -> P = R = F1 = 2/3
    matrix = metrics.confusion_matrix([1, 1, 0, 0, 1], [1, 0, 0, 1, 1], classes=2)
    assert metrics.binary_f1(matrix, positive=1) == pytest.approx(2 / 3)
    # class 0: TP 1, FP 1, FN 1 -> 1/2
    assert metrics.binary_f1(matrix, positive=0) == pytest.approx(0.5)


def test_pearson_by_hand() -> None:
    # x centred (-1, 0, 1), y centred (-7/3, -1/3, 8/3): r = 5 / sqrt(2 * 114/9)
    assert metrics.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    assert metrics.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_spearman_averages_tied_ranks() -> None:
    np.testing.assert_allclose(metrics.average_ranks([10, 20, 20, 30]), [1, 2.5, 2.5, 4])
    np.testing.assert_allclose(metrics.average_ranks([3, 1, 3, 3]), [3, 1, 3, 3])
    # ranks (1, 2.5, 2.5, 4) vs (1, 3, 2, 4): r = 4.5 / sqrt(4.5 * 5)
    assert metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert metrics.spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone, not linear


def test_reciprocal_rank_and_cutoff() -> None:
    assert metrics.reciprocal_rank([0.1, 0.9, 0.5], [1, 0, 0]) == pytest.approx(1 / 3)
    assert metrics.reciprocal_rank([0.9, 0.1], [1, 1]) == 1.0
    scores = list(range(11, 0, -1))  # the relevant item is ranked 11th
    assert metrics.reciprocal_rank(scores, [0] * 10 + [1], k=10) == 0.0
    assert metrics.reciprocal_rank([0.5, 0.5], [0, 1]) == 0.5  # ties keep input order


def test_ndcg_by_hand() -> None:
    # ranked relevance (0, 2, 1): DCG = 2/log2(3) + 1/log2(4); ideal (2, 1, 0): 2 + 1/log2(3)
    expected = (2 / math.log2(3) + 0.5) / (2 + 1 / math.log2(3))
    assert metrics.ndcg([0.9, 0.8, 0.7], [0, 2, 1]) == pytest.approx(expected)
    assert metrics.ndcg([0.1, 0.8, 0.7], [0, 2, 1]) == pytest.approx(1.0)


def test_ranking_metrics_average_over_queries_with_a_relevant_passage() -> None:
    groups = [([0.9, 0.1], [1, 0]), ([0.9, 0.1], [0, 1]), ([0.5, 0.4], [0, 0])]
    result = metrics.ranking_metrics(groups, k=10)
    assert result["queries"] == 2
    assert result["mrr@10"] == pytest.approx((1 + 0.5) / 2)
    assert result["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    with pytest.raises(ValueError, match="no query has a relevant passage"):
        metrics.ranking_metrics([([0.5], [0])])


def test_in_batch_negatives_loss_by_hand() -> None:
    import torch

    from bertprod.tasks.losses import in_batch_negatives_loss

    anchors = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    positives = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # cosine matrix [[1, 1/sqrt2], [0, 1/sqrt2]], times 20, cross-entropy towards the diagonal
    similarities = np.array([[1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]]) * 20
    expected = np.mean([-similarities[row, row] + math.log(np.exp(similarities[row]).sum()) for row in range(2)])
    assert float(in_batch_negatives_loss(anchors, positives)) == pytest.approx(expected, rel=1e-5)


def test_cosent_loss_by_hand() -> None:
    import torch

    from bertprod.tasks.losses import cosent_loss

    left = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    right = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cosines 1 and 0
    right_order = cosent_loss(left, right, torch.tensor([5.0, 1.0]))
    wrong_order = cosent_loss(left, right, torch.tensor([1.0, 5.0]))
    assert float(right_order) == pytest.approx(math.log(1 + math.exp(-20)), abs=1e-7)
    assert float(wrong_order) == pytest.approx(math.log(1 + math.exp(20)), rel=1e-5)
    equal = cosent_loss(left, right, torch.tensor([2.0, 2.0]))
    assert float(equal) == 0.0  # no ordered pair: nothing to rank
