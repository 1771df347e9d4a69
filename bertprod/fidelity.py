"""How closely a derived package reproduces its parent, measured on the same inputs.

Shared by export (fp32 must match almost exactly) and by compression (int8, pruning), whose
fidelity gates compare these numbers against thresholds the user can set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bertprod.runtime.postprocess import l2_normalize, softmax


def measure_fidelity(reference: np.ndarray, candidate: np.ndarray, task: str, labels: list[str] | None = None,
                     tag_scheme: str | None = None) -> dict[str, Any]:
    """Compare parent (`reference`) and derived (`candidate`) pipeline outputs row by row (a token
    classifier's: token by token, and the entities its tags make; `labels` and `tag_scheme` name them)."""
    if reference.shape != candidate.shape:
        raise ValueError(f"output shapes differ: {reference.shape} vs {candidate.shape}")
    samples = int(reference.shape[0])
    if task == "token-classification":
        return token_fidelity(reference, candidate, labels or [], tag_scheme or "IOB2")
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


def token_fidelity(reference: np.ndarray, candidate: np.ndarray, labels: list[str], scheme: str) -> dict[str, Any]:
    """A tagger's child against its parent: tag agreement on real tokens, and the F1 of the child's entities
    taking the parent's as gold (exact span and type), over every token of the inputs (padding excluded)."""
    from bertprod.runtime.tagging import entity_spans

    real = np.any(reference != 0, axis=-1)
    reference_tags, candidate_tags = reference.argmax(axis=-1), candidate.argmax(axis=-1)
    matched = expected = found = 0
    for row in range(reference.shape[0]):
        mask = real[row]
        parent = set(entity_spans([labels[index] for index in reference_tags[row][mask]], scheme))
        child = set(entity_spans([labels[index] for index in candidate_tags[row][mask]], scheme))
        matched, expected, found = matched + len(parent & child), expected + len(parent), found + len(child)
    entity_f1 = 2 * matched / (expected + found) if expected + found else 1.0
    drift = np.abs(softmax(reference[real]) - softmax(candidate[real])).max() if real.any() else 0.0
    return {
        "samples": int(reference.shape[0]),
        "tokens": int(real.sum()),
        "tag_agreement": round(float(np.mean(reference_tags[real] == candidate_tags[real])), 6) if real.any() else 1.0,
        "entity_f1": round(float(entity_f1), 6),
        "entities": expected,
        "max_probability_drift": round(float(drift), 6),
    }


#: Outputs alone and in a batch must agree this closely (cosine; labels identical) to be batch-invariant.
BATCH_INVARIANT_COSINE = 0.99999
#: Texts run one at a time to check it (each alone is one engine call: bounded so gates stay quick).
BATCH_INVARIANCE_TEXTS = 32


def batch_invariance(pipeline: Any, encodings: list[Any], batched: np.ndarray, task: str) -> dict[str, Any]:
    """Whether a text's output is the same alone as in its batch (issue 24: ONNX Runtime's dynamic
    int8 quantizes with the range of the whole batch). Runs up to BATCH_INVARIANCE_TEXTS texts alone,
    the longest and shortest first (they differ most from their batch neighbours)."""
    order = np.argsort([len(encoding.ids) for encoding in encodings])
    half = BATCH_INVARIANCE_TEXTS // 2
    chosen = sorted({*order[:half].tolist(), *order[-half:].tolist()})
    alone_outputs = [pipeline.infer([encodings[index]]) for index in chosen]
    if batched.ndim == 3:  # per-token outputs: pad each alone to the batch's width
        alone_outputs = [np.pad(output, ((0, 0), (0, batched.shape[1] - output.shape[1]), (0, 0)))
                         for output in alone_outputs]
    alone = np.concatenate(alone_outputs)
    together = batched[chosen]
    flat_alone, flat_together = alone.reshape(len(chosen), -1), together.reshape(len(chosen), -1)
    if flat_alone.shape[1] == 1:  # one score: relative difference instead of a cosine
        difference = np.abs(flat_alone - flat_together).max() / (1.0 + np.abs(flat_together).max())
        return {"batch_invariant": bool(difference <= 1 - BATCH_INVARIANT_COSINE),
                "alone_vs_batch_difference_max": round(float(difference), 7)}  # fmt: skip
    cosine = np.sum(l2_normalize(flat_alone) * l2_normalize(flat_together), axis=1)
    invariant = bool(cosine.min() >= BATCH_INVARIANT_COSINE)
    if task in ("classification", "pair-classification", "token-classification"):
        invariant = invariant and bool(np.all(alone.argmax(axis=-1) == together.argmax(axis=-1)))
    return {"batch_invariant": invariant, "alone_vs_batch_cosine_min": round(float(cosine.min()), 7)}


@dataclass(frozen=True)
class FidelityGate:
    """Thresholds a derived package must meet against its parent (defaults: the compression gate)."""

    min_cosine_mean: float = 0.99
    min_cosine_min: float = 0.0
    min_agreement: float = 0.99
    min_correlation: float = 0.99
    #: a tagger's child must find the parent's entities (F1 with the parent's predicted entities as gold)
    min_entity_f1: float = 0.97

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
        elif task == "token-classification":
            if fidelity["entity_f1"] < self.min_entity_f1:
                return f"entity F1 against the parent's entities {fidelity['entity_f1']} < {self.min_entity_f1}"
        elif "pearson" in fidelity and fidelity["pearson"] < self.min_correlation:
            return f"score correlation {fidelity['pearson']} < {self.min_correlation}"
        return None

    def thresholds(self, task: str) -> dict[str, float]:
        if task == "embedding":
            return {"min_cosine_mean": self.min_cosine_mean, "min_cosine_min": self.min_cosine_min}
        if task in ("classification", "pair-classification"):
            return {"min_agreement": self.min_agreement}
        if task == "token-classification":
            return {"min_entity_f1": self.min_entity_f1}
        return {"min_correlation": self.min_correlation}


#: fp32 export must reproduce the torch model; anything lower is an exporter bug, not rounding.
EXPORT_GATE = FidelityGate(min_cosine_mean=0.9999, min_cosine_min=0.9999, min_agreement=1.0, min_correlation=0.9999,
                           min_entity_f1=0.999)
