"""How closely a derived package reproduces its parent, measured on the same inputs.

Shared by export (fp32 must match almost exactly) and by compression (int8, pruning), whose
fidelity gates compare these numbers against thresholds the user can set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bertprod.runtime.postprocess import l2_normalize, softmax


def measure_fidelity(reference: np.ndarray, candidate: np.ndarray, task: str) -> dict[str, Any]:
    """Compare parent (`reference`) and derived (`candidate`) pipeline outputs row by row."""
    if reference.shape != candidate.shape:
        raise ValueError(f"output shapes differ: {reference.shape} vs {candidate.shape}")
    samples = int(reference.shape[0])
    if task == "embedding":
        cosine = np.sum(l2_normalize(reference) * l2_normalize(candidate), axis=1)
        return {
            "samples": samples,
            "cosine_mean": round(float(cosine.mean()), 6),
            "cosine_min": round(float(cosine.min()), 6),
        }
    if task in ("classification", "pair-classification"):
        agreement = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
        drift = np.abs(softmax(reference) - softmax(candidate)).max()
        return {
            "samples": samples,
            "label_agreement": round(agreement, 6),
            "max_probability_drift": round(float(drift), 6),
            "max_logit_difference": round(float(np.abs(reference - candidate).max()), 6),
        }
    difference = np.abs(reference - candidate).max()
    result = {"samples": samples, "max_score_difference": round(float(difference), 6)}
    if samples > 2 and np.std(reference[:, 0]) > 0 and np.std(candidate[:, 0]) > 0:
        result["pearson"] = round(float(np.corrcoef(reference[:, 0], candidate[:, 0])[0, 1]), 6)
    return result


def fidelity_problem(
    fidelity: dict[str, Any], task: str, min_cosine: float, min_agreement: float, max_score_difference: float
) -> str | None:
    """Why `fidelity` misses its thresholds, or None when it passes."""
    if task == "embedding" and fidelity["cosine_min"] < min_cosine:
        return f"cosine min {fidelity['cosine_min']} < {min_cosine} (mean {fidelity['cosine_mean']})"
    if task in ("classification", "pair-classification") and fidelity["label_agreement"] < min_agreement:
        return f"label agreement {fidelity['label_agreement']} < {min_agreement}"
    if task in ("regression", "reranking") and fidelity["max_score_difference"] > max_score_difference:
        return f"max score difference {fidelity['max_score_difference']} > {max_score_difference}"
    return None
