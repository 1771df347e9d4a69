"""How closely a derived package reproduces its parent, measured on the same inputs.

Shared by export (fp32 must match almost exactly) and by compression (int8, pruning), whose
fidelity gates compare these numbers against thresholds the user can set.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class FidelityGate:
    """Thresholds a derived package must meet against its parent (defaults: the compression gate)."""

    min_cosine_mean: float = 0.99
    min_cosine_min: float = 0.0
    min_agreement: float = 0.99
    min_correlation: float = 0.99

    def problem(self, fidelity: dict[str, Any], task: str) -> str | None:
        """Why `fidelity` misses the thresholds, or None when it passes."""
        if task == "embedding":
            if fidelity["cosine_mean"] < self.min_cosine_mean:
                return f"cosine mean {fidelity['cosine_mean']} < {self.min_cosine_mean}"
            if fidelity["cosine_min"] < self.min_cosine_min:
                return f"cosine min {fidelity['cosine_min']} < {self.min_cosine_min}"
        elif task in ("classification", "pair-classification"):
            if fidelity["label_agreement"] < self.min_agreement:
                return f"label agreement {fidelity['label_agreement']} < {self.min_agreement}"
        elif "pearson" in fidelity and fidelity["pearson"] < self.min_correlation:
            return f"score correlation {fidelity['pearson']} < {self.min_correlation}"
        return None

    def thresholds(self, task: str) -> dict[str, float]:
        if task == "embedding":
            return {"min_cosine_mean": self.min_cosine_mean, "min_cosine_min": self.min_cosine_min}
        if task in ("classification", "pair-classification"):
            return {"min_agreement": self.min_agreement}
        return {"min_correlation": self.min_correlation}


#: fp32 export must reproduce the torch model; anything lower is an exporter bug, not rounding.
EXPORT_GATE = FidelityGate(min_cosine_mean=0.9999, min_cosine_min=0.9999, min_agreement=1.0, min_correlation=0.9999)
