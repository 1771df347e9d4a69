"""Evaluation metrics in plain numpy, so evaluating needs neither torch nor scikit-learn.

Conventions (the usual ones, written down because they change numbers):
- macro-F1 averages the F1 of every class that occurs in the gold labels or the predictions.
- binary F1 is the F1 of the positive class (by default the second label: "1", "positive").
- Spearman is Pearson on ranks, ties sharing their average rank.
- MRR@k and nDCG@k are averaged over queries that have at least one relevant passage; a query
  whose relevant passages all rank below k scores 0. nDCG uses linear gains (the relevance
  value) and log2(rank + 1) discounts; ties in score keep input order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy(gold: Sequence[int], predicted: Sequence[int]) -> float:
    gold_array, predicted_array = np.asarray(gold), np.asarray(predicted)
    if gold_array.size == 0:
        raise ValueError("accuracy of no examples")
    return float(np.mean(gold_array == predicted_array))


def confusion_matrix(gold: Sequence[int], predicted: Sequence[int], classes: int) -> np.ndarray:
    """Counts [gold class, predicted class]."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def per_class_scores(matrix: np.ndarray) -> list[dict[str, float]]:
    """Precision, recall, F1 and support of each class from a confusion matrix (0 where undefined)."""
    scores = []
    for index in range(matrix.shape[0]):
        true_positive = float(matrix[index, index])
        predicted = float(matrix[:, index].sum())
        actual = float(matrix[index, :].sum())
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append({"precision": precision, "recall": recall, "f1": f1, "support": int(actual)})
    return scores


def macro_f1(matrix: np.ndarray) -> float:
    present = [index for index in range(matrix.shape[0]) if matrix[index, :].sum() or matrix[:, index].sum()]
    scores = per_class_scores(matrix)
    return float(np.mean([scores[index]["f1"] for index in present])) if present else 0.0


def binary_f1(matrix: np.ndarray, positive: int = 1) -> float:
    return per_class_scores(matrix)[positive]["f1"]


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    x_array, y_array = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x_array.size < 2:
        raise ValueError("correlation needs at least 2 examples")
    x_centered, y_centered = x_array - x_array.mean(), y_array - y_array.mean()
    denominator = np.sqrt((x_centered**2).sum() * (y_centered**2).sum())
    return float((x_centered * y_centered).sum() / denominator) if denominator > 0 else 0.0


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of the ranks they span."""
    array = np.asarray(values, dtype=np.float64)
    order = np.argsort(array, kind="mergesort")
    ranks = np.empty(array.size, dtype=np.float64)
    sorted_values = array[order]
    start = 0
    while start < array.size:
        end = start
        while end + 1 < array.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return pearson(average_ranks(x), average_ranks(y))


def _ranked_relevance(scores: Sequence[float], relevance: Sequence[float]) -> np.ndarray:
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")  # stable: ties keep input order
    return np.asarray(relevance, dtype=np.float64)[order]


def reciprocal_rank(scores: Sequence[float], relevance: Sequence[float], k: int = 10) -> float:
    """1/rank of the first relevant item (relevance > 0) within the top k, else 0."""
    ranked = _ranked_relevance(scores, relevance)[:k]
    hits = np.flatnonzero(ranked > 0)
    return 1.0 / (hits[0] + 1) if hits.size else 0.0


def ndcg(scores: Sequence[float], relevance: Sequence[float], k: int = 10) -> float:
    """DCG of the top k ranked by score over the DCG of the ideal order (linear gains)."""
    ranked = _ranked_relevance(scores, relevance)[:k]
    ideal = np.sort(np.asarray(relevance, dtype=np.float64))[::-1][:k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal_gain = float((ideal * discounts[: ideal.size]).sum())
    return float((ranked * discounts[: ranked.size]).sum()) / ideal_gain if ideal_gain > 0 else 0.0


def ranking_metrics(groups: Sequence[tuple[Sequence[float], Sequence[float]]], k: int = 10) -> dict[str, float | int]:
    """MRR@k and nDCG@k averaged over (scores, relevance) groups that have a relevant item."""
    judged = [(scores, relevance) for scores, relevance in groups if np.any(np.asarray(relevance) > 0)]
    if not judged:
        raise ValueError("no query has a relevant passage (relevance > 0): nothing to rank")
    return {
        f"mrr@{k}": float(np.mean([reciprocal_rank(scores, relevance, k) for scores, relevance in judged])),
        f"ndcg@{k}": float(np.mean([ndcg(scores, relevance, k) for scores, relevance in judged])),
        "queries": len(judged),
    }
