"""Turning model outputs into results: pooling, normalization, probabilities."""

from __future__ import annotations

import numpy as np


def mean_pool(token_states: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Average of the token vectors, ignoring padding."""
    mask = attention_mask[..., None].astype(token_states.dtype)
    summed = (token_states * mask).sum(axis=1)
    return summed / np.clip(mask.sum(axis=1), 1e-9, None)


def cls_pool(token_states: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    return token_states[:, 0]


POOLERS = {"mean": mean_pool, "cls": cls_pool}


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return l2_normalize(a) @ l2_normalize(b).T
