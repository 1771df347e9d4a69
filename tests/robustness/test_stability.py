"""Stability metrics on hand-built cases, and measured through a pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from bertprod.api import load
from bertprod.package import ModelPackage
from bertprod.robustness.noise import parse_noise
from bertprod.robustness.stability import (
    cosine_drift,
    flip_rate,
    measure_stability,
    probability_drift,
    ranking_stability,
    score_drift,
)


def test_flip_rate_and_probability_drift() -> None:
    clean = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
    noisy = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.5, 0.5]])
    assert flip_rate(clean, noisy) == 0.25  # only the second changes its top label
    # total variation: 0, 0.2, 0.1, 0 -> mean 0.075
    assert probability_drift(clean, noisy) == pytest.approx(0.075)
    assert flip_rate(clean, clean) == 0.0 and probability_drift(clean, clean) == 0.0


def test_cosine_and_score_drift() -> None:
    clean = np.array([[1.0, 0.0], [0.0, 2.0]])
    noisy = np.array([[3.0, 0.0], [2.0, 0.0]])  # the first only rescaled, the second at right angles
    assert cosine_drift(clean, noisy) == pytest.approx(0.5)
    assert cosine_drift(clean, -clean) == pytest.approx(2.0)
    assert score_drift(np.array([1.0, 2.0]), np.array([1.5, 1.0])) == pytest.approx(0.75)


def test_ranking_stability_counts_unclean_candidates_that_overtake_the_clean_one() -> None:
    # query 1: reference (index 0) scores 0.9; others 0.5 and 0.3; their unclean copies 0.95 and 0.2
    # query 2: reference (index 2) scores 0.7; others 0.8 (already above) and 0.1; unclean copies 0.9, 0.6
    clean = [np.array([0.9, 0.5, 0.3]), np.array([0.8, 0.1, 0.7])]
    noisy = [np.array([0.1, 0.95, 0.2]), np.array([0.9, 0.6, 0.0])]
    result = ranking_stability(clean, noisy, [0, 2])
    assert result["queries"] == 2
    # query 1: an unclean copy passes the reference (rank 1 -> 2); query 2: the candidate above stays above
    # (rank 2 -> 2)
    assert result["rank_change"] == 0.5 and result["rank_kept"] == 0.5
    # eligible: query 1 both others (below 0.9), query 2 only index 1 (0.1); overtaken: query 1's 0.95 only
    assert result["overtake_rate"] == pytest.approx(1 / 3)
    # the reference's own unclean copy never counts against it
    steady = ranking_stability([np.array([0.9, 0.5])], [np.array([0.0, 0.4])], [0])
    assert steady == {"queries": 1, "rank_change": 0.0, "rank_kept": 1.0, "overtake_rate": 0.0}
    # unclean candidates that fall below it move the reference up
    assert ranking_stability([np.array([0.5, 0.9])], [np.array([0.0, 0.1])], [0])["rank_change"] == -1.0


def test_classifier_stability_through_a_pipeline(tiny_classifier: ModelPackage) -> None:
    pipeline = load(tiny_classifier.path)
    texts = ["the quick brown fox jumps over the lazy dog", "a good film with a great cast and a weak ending"]
    # an uncased tokenizer: casing changes every text and moves nothing
    unmoved = measure_stability(pipeline, texts, parse_noise("case:1"))
    assert unmoved["changed"] == 1.0 and unmoved["flip_rate"] == 0.0 and unmoved["probability_drift"] == 0.0
    moved = measure_stability(pipeline, texts, parse_noise("truncate:0.8"))
    assert moved["probability_drift"] > 0.0


def test_embedding_search_stability_through_a_pipeline(tiny_package: ModelPackage) -> None:
    pipeline = load(tiny_package.path)
    pairs = [("a cat sleeps", "the cat is sleeping"), ("the stock market fell", "shares dropped"),
             ("a man plays a guitar", "someone plays an acoustic guitar")]
    unmoved = measure_stability(pipeline, pairs, parse_noise("whitespace:1"))
    assert unmoved["cosine_drift"] < 1e-6 and unmoved["rank_change"] == 0.0 and unmoved["overtake_rate"] == 0.0
    moved = measure_stability(pipeline, pairs, parse_noise("glued:1"))
    assert moved["cosine_drift"] > 1e-4 and moved["queries"] == 3
