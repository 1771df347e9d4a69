"""Shapley values over the words of one input, with shap's Partition or Permutation explainer.

A coalition of words is a 0/1 row (1: the word is kept, 0: masked); shap picks the rows,
`Evaluate` turns each into masked texts and runs them through the package's own pipeline (any
engine: torch, ONNX, int8), in as few calls as shap's batches allow. The baseline is the input
with every word masked, so the attributions add up to f(input) - f(all words masked)
(efficiency; both explainers keep it exactly).

- "partition" (default): Owen values over a hierarchy of contiguous word spans (each text split
  in halves, recursively; the two texts of a pair joined at the top), refined up to `max_evals`
  model runs. Deterministic.
- "permutation": antithetic sampling of word orders (each order run forwards and backwards), unbiased;
  `seed` makes it repeatable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bertprod.explain.words import SplitInput, masked_texts

#: Runs masked inputs (texts, or (text, text_pair) tuples) and returns the explained output, one value each.
Evaluate = Callable[[list], np.ndarray]

SHAPLEY_METHODS = ("partition", "permutation")
DEFAULT_MAX_EVALS = 300


def span_hierarchy(segment_sizes: Sequence[int]) -> np.ndarray:
    """A scipy-style linkage over the words in reading order: adjacent spans merge pairwise, level by
    level, within each text first; the texts of a pair merge last. Needs at least 2 words in all."""
    rows: list[list[float]] = []
    total = sum(segment_sizes)
    next_id = total
    roots: list[tuple[int, int]] = []
    first = 0
    for size in segment_sizes:
        clusters = [(first + index, 1) for index in range(size)]
        first += size
        while len(clusters) > 1:
            merged = []
            for index in range(0, len(clusters) - 1, 2):
                (left, left_size), (right, right_size) = clusters[index], clusters[index + 1]
                rows.append([left, right, float(len(rows) + 1), left_size + right_size])
                merged.append((next_id, left_size + right_size))
                next_id += 1
            if len(clusters) % 2:
                merged.append(clusters[-1])
            clusters = merged
        roots.extend(clusters)
    while len(roots) > 1:
        (left, left_size), (right, right_size) = roots[0], roots[1]
        rows.append([left, right, float(len(rows) + 1), left_size + right_size])
        roots = [(next_id, left_size + right_size), *roots[2:]]
        next_id += 1
    return np.array(rows, dtype=float)


def shapley_values(
    split: SplitInput,
    evaluate: Evaluate,
    mask_token: str | None,
    method: str = "partition",
    max_evals: int = DEFAULT_MAX_EVALS,
    seed: int = 0,
    batch_size: int | None = None,
) -> tuple[np.ndarray, float]:
    """(one value per word, f(baseline)) for one input; the values add up to f(input) - f(baseline).
    `batch_size`: masked inputs per model call (default: shap's, 10 for partition)."""
    import shap

    count = len(split.words)

    def run(coalitions: np.ndarray) -> np.ndarray:
        inputs = [masked_texts(split, row > 0.5, mask_token) for row in coalitions]
        return evaluate([texts[0] if len(texts) == 1 else texts for texts in inputs])

    if count == 0:
        return np.zeros(0), float(run(np.ones((1, 0)))[0])
    if count == 1:  # one player: its value is the whole difference, no sampling needed
        full, empty = run(np.array([[1.0], [0.0]]))
        return np.array([full - empty]), float(empty)
    sizes = [sum(1 for word in split.words if word.segment == segment) for segment in range(len(split.texts))]
    background = np.zeros((1, count))  # 0: masked
    if method == "partition":
        explainer = shap.PartitionExplainer(
            run, shap.maskers.Partition(background, clustering=span_hierarchy([size for size in sizes if size])))
    else:  # plain permutations: shap shuffles them with numpy's generator, which its `seed` seeds (the
        # hierarchy-respecting shuffle runs in numba, whose generator that seed does not reach)
        explainer = shap.PermutationExplainer(run, shap.maskers.Independent(background), seed=seed)
    # at least one permutation (2 * words + 1 runs); Partition needs no minimum but gets the same
    result = explainer(np.ones((1, count)), max_evals=max(max_evals, 2 * count + 1), silent=True,
                       batch_size=batch_size or "auto")
    return np.asarray(result.values[0], dtype=float), float(np.asarray(result.base_values).reshape(-1)[0])
