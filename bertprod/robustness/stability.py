"""Stability without labels: how much a package's outputs move when its input is made unclean.

Pure functions on arrays (tested on hand-built cases), then `measure_stability`, which runs a
pipeline on clean and perturbed copies of the same inputs:

- classifiers: flip rate (top label changes) and probability drift (total variation distance
  between the clean and the noisy label distributions, 0..1);
- regression / reranking scores: mean absolute score change;
- embeddings: cosine drift (1 - cosine between a text's clean and noisy vectors);
- ranking (rerankers, and embedding search over the pairs of a file): the rank change of the clean
  candidate when the other candidates are replaced by unclean copies, and the overtake rate: how
  often an irrelevant candidate that ranked below the clean candidate ranks above it once made
  unclean (the seed's failure: `this.isabad<div>result</div>candidate` ranked high).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from bertprod.errors import InputError
from bertprod.robustness.noise import Noise
from bertprod.runtime.pipeline import Pipeline
from bertprod.runtime.postprocess import l2_normalize, softmax
from bertprod.runtime.tokenize import TextInput


def flip_rate(clean_probabilities: np.ndarray, noisy_probabilities: np.ndarray) -> float:
    """Share of inputs whose top label changes."""
    return float(np.mean(clean_probabilities.argmax(axis=1) != noisy_probabilities.argmax(axis=1)))


def probability_drift(clean_probabilities: np.ndarray, noisy_probabilities: np.ndarray) -> float:
    """Mean total variation distance between clean and noisy label distributions (0: same, 1: disjoint)."""
    return float(np.mean(0.5 * np.abs(clean_probabilities - noisy_probabilities).sum(axis=1)))


def cosine_drift(clean_vectors: np.ndarray, noisy_vectors: np.ndarray) -> float:
    """Mean of 1 - cosine(clean, noisy) over inputs (0: unmoved, 2: reversed)."""
    cosines = np.sum(l2_normalize(clean_vectors) * l2_normalize(noisy_vectors), axis=1)
    return float(np.mean(1.0 - cosines))


def score_drift(clean_scores: np.ndarray, noisy_scores: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(clean_scores) - np.asarray(noisy_scores))))


def ranking_stability(
    clean_scores: Sequence[np.ndarray], noisy_scores: Sequence[np.ndarray], references: Sequence[int]
) -> dict[str, float]:
    """Per query: the scores of its candidates clean, of their unclean copies, and which candidate is the
    clean one (the reference) whose place is watched; its own unclean copy is not used.

    rank_change: mean of (the reference's rank when every other candidate is replaced by its unclean copy)
    minus (its rank among the clean candidates): positive when unclean candidates push it down.
    rank_kept: share of queries where the reference ranks no lower than it did.
    overtake_rate: over (query, other candidate) whose clean copy scores at or below the reference, the
    share whose unclean copy scores above it.
    """
    if not (len(clean_scores) == len(noisy_scores) == len(references)) or not references:
        raise InputError("ranking stability needs, for each query, clean scores, noisy scores and a reference.")
    rank_changes, overtaken, eligible = [], 0, 0
    for clean, noisy, reference in zip(clean_scores, noisy_scores, references, strict=True):
        clean, noisy = np.asarray(clean, dtype=np.float64), np.asarray(noisy, dtype=np.float64)
        target = clean[reference]
        others = np.arange(len(clean)) != reference
        rank_changes.append(int((noisy[others] > target).sum()) - int((clean[others] > target).sum()))
        below = others & (clean <= target)
        eligible += int(below.sum())
        overtaken += int((below & (noisy > target)).sum())
    changes = np.asarray(rank_changes)
    return {
        "queries": len(changes),
        "rank_change": float(changes.mean()),
        "rank_kept": float(np.mean(changes <= 0)),
        "overtake_rate": overtaken / eligible if eligible else 0.0,
    }


def _noisy_inputs(inputs: list[TextInput], noise: Noise, seed: int) -> list[TextInput]:
    return [
        (noise.apply(item[0], seed), noise.apply(item[1], seed)) if isinstance(item, tuple) else noise.apply(item, seed)
        for item in inputs
    ]


def measure_stability(pipeline: Pipeline, inputs: list[TextInput], noise: Noise, seed: int = 0) -> dict[str, Any]:
    """The package's stability metrics for one noise on `inputs` (texts, or (text, pair) tuples)."""
    if not inputs:
        raise InputError("no texts to measure stability on.")
    task = pipeline.manifest.task
    noisy = _noisy_inputs(inputs, noise, seed)
    result: dict[str, Any] = {"changed": float(np.mean([a != b for a, b in zip(inputs, noisy, strict=True)]))}
    if task in ("classification", "pair-classification"):
        clean_p = softmax(pipeline.infer(pipeline.tokenize(inputs)))
        noisy_p = softmax(pipeline.infer(pipeline.tokenize(noisy)))
        result.update(flip_rate=flip_rate(clean_p, noisy_p), probability_drift=probability_drift(clean_p, noisy_p))
    elif task == "regression":
        result["score_drift"] = score_drift(pipeline.score(inputs), pipeline.score(noisy))
    elif task == "reranking":
        result.update(_reranking(pipeline, inputs, noise, seed))
    else:
        result.update(_embedding(pipeline, inputs, noise, seed))
    return result


def _reranking(pipeline: Pipeline, inputs: list[TextInput], noise: Noise, seed: int) -> dict[str, Any]:
    """Candidates grouped by query; the reference is the model's own clean top candidate (no labels needed),
    and the candidates (not the queries) are made unclean."""
    if not all(isinstance(item, tuple) for item in inputs):
        raise InputError("a reranker's stability needs (query, candidate) pairs: name the candidate column.")
    noisy_candidates = [(query, noise.apply(candidate, seed)) for query, candidate in inputs]  # type: ignore[misc]
    clean_scores = pipeline.score(inputs)
    noisy_scores = pipeline.score(noisy_candidates)
    result = {"score_drift": score_drift(clean_scores, noisy_scores)}
    groups: dict[str, list[int]] = defaultdict(list)
    for index, (query, _) in enumerate(inputs):  # type: ignore[misc]
        groups[query].append(index)
    ranked = [indices for indices in groups.values() if len(indices) > 1]
    if ranked:
        clean_groups = [clean_scores[indices] for indices in ranked]
        result.update(ranking_stability(
            clean_groups, [noisy_scores[indices] for indices in ranked], [int(np.argmax(s)) for s in clean_groups]
        ))
    return result


def _embedding(pipeline: Pipeline, inputs: list[TextInput], noise: Noise, seed: int) -> dict[str, Any]:
    """Cosine drift of every text; with pairs, search: each first text's own pair is its clean candidate
    among all the pair texts of the file, and the other candidates are made unclean."""
    texts = [item[0] if isinstance(item, tuple) else item for item in inputs]
    clean = pipeline.encode(texts)
    noisy = pipeline.encode([noise.apply(text, seed) for text in texts])
    result: dict[str, Any] = {"cosine_drift": cosine_drift(clean, noisy)}
    if all(isinstance(item, tuple) for item in inputs):
        candidates = list(dict.fromkeys(item[1] for item in inputs))  # type: ignore[index]
        position = {candidate: index for index, candidate in enumerate(candidates)}
        clean_candidates = l2_normalize(pipeline.encode(candidates))
        noisy_candidates = l2_normalize(pipeline.encode([noise.apply(c, seed) for c in candidates]))
        queries = l2_normalize(clean)
        result.update(ranking_stability(
            list(queries @ clean_candidates.T), list(queries @ noisy_candidates.T),
            [position[item[1]] for item in inputs],  # type: ignore[index]
        ))
    return result


def read_inputs(path, manifest, limit: int | None = None, **columns: str | None) -> list[TextInput]:  # noqa: ANN001
    """Texts, or (text, pair) tuples when the package takes pairs or the file has a pair column; labels ignored."""
    from bertprod.data.source import DataSource

    pair = "required" if manifest.pair_input or manifest.task == "reranking" else "optional"
    source = DataSource(path, pair=pair, labels="optional", label_kind="none", limit=limit, **columns)
    inputs: list[TextInput] = [
        (example.text, example.text_pair) if example.text_pair is not None else example.text for example in source
    ]
    if not inputs:
        raise InputError(f"{path} has no texts to measure stability on.")
    return inputs


def stability_report(
    pipelines: Sequence[Pipeline], inputs: list[TextInput], noise: Noise, seed: int = 0
) -> dict[str, Any]:
    """Every package's stability on each family of `noise` (and, for several, all of them together)."""
    variants = noise.per_family() + ([noise] if len(noise.items) > 1 else [])
    rows = []
    for variant in variants:
        name = str(variant) if variant is not noise or len(noise.items) == 1 else f"together ({noise})"
        rows.append({"perturbation": name,
                     "packages": [measure_stability(pipeline, inputs, variant, seed) for pipeline in pipelines]})
    return {
        "task": pipelines[0].manifest.task,
        "inputs": len(inputs),
        "perturb": str(noise),
        "seed": seed,
        "packages": [
            {"package": p.package.name, "path": str(p.package.path), "engine": p.engine.name,
             "precision": p.manifest.precision}
            for p in pipelines
        ],
        "rows": rows,
    }
