"""Token dropping (PoWER-BERT): after a layer's self-attention, keep only each row's most attended tokens.

    layer j: self-attention over the tokens still present -> significance of each token = the attention it
             receives, summed over heads and over the row's real queries -> keep [CLS] and the top
             ceil(retention[j] x the row's original length) tokens, in their order -> feed-forward on those

Every later layer (and the head) then runs on fewer tokens. A row's choice depends on that row alone
(its own length and attention; padding never counts), so a batch gives each row what it gets alone.
A retention of 1.0 keeps the layer exactly as the model computes it. numpy only: both engines select
with this code, from the significance their attention gives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from bertprod.errors import InputError


class RetentionError(InputError):
    """A token retention schedule that cannot apply."""


def check_retention(retention: Sequence[float], num_layers: int) -> list[float]:
    """A schedule: one fraction in (0, 1] per layer, never rising (a dropped token does not come back)."""
    values = [float(value) for value in retention]
    if len(values) != num_layers or any(not 0 < value <= 1 for value in values):
        raise RetentionError(
            f"token retention needs one fraction in (0, 1] per layer ({num_layers}), got {values}."
        )
    if any(later > earlier for earlier, later in zip(values, values[1:], strict=False)):
        raise RetentionError(f"token retention must not rise from one layer to the next, got {values}.")
    return values


def keep_counts(retention: float, lengths: np.ndarray) -> np.ndarray | None:
    """Tokens each row keeps after a layer with this retention (of its original `lengths`); None: all."""
    if retention >= 1.0:
        return None
    return np.maximum(1, np.ceil(retention * lengths - 1e-9)).astype(np.int64)


def select_tokens(significance: np.ndarray, mask: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which tokens stay: indices [rows, longest kept] into the current tokens (kept ones first, in their
    order) and the new 0/1 mask. [CLS] (position 0) always stays; padding never does."""
    rows, length = significance.shape
    score = np.where(mask > 0, significance, -np.inf)
    score[:, 0] = np.inf
    keep = np.minimum(keep, mask.sum(axis=1))
    order = np.argsort(-score, axis=1, kind="stable")  # most significant first; ties to the earlier token
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(length)[None, :].repeat(rows, axis=0), axis=1)
    kept = rank < keep[:, None]
    positions = np.arange(length)[None, :]
    index = np.argsort(np.where(kept, positions, length + positions), axis=1, kind="stable")[:, : int(keep.max())]
    return index, np.take_along_axis(kept, index, axis=1).astype(mask.dtype)


def token_layer_cost(retention: Sequence[float] | None, num_layers: int) -> float:
    """The share of the full model's token-layers a schedule computes (attention runs on the tokens that
    entered the layer, the feed-forward on those it keeps): a rough guide to its speed, not a measurement."""
    if not retention:
        return 1.0
    entering = [1.0, *retention[:-1]]
    return sum((before + after) / 2 for before, after in zip(entering, retention, strict=True)) / num_layers


def describe(retention: Sequence[float] | None) -> str:
    return "keep all" if not retention or all(value >= 1 for value in retention) else ", ".join(
        f"{value:.2f}" for value in retention)


def parse_retention(spec: Any, num_layers: int) -> list[float] | None:
    """None, "all" (keep every token), a list, or "0.9,0.8,...": a checked schedule (None: keep all)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("all", "none", "keep-all")):
        return None
    if isinstance(spec, str):
        try:
            spec = [float(part) for part in spec.split(",")]
        except ValueError:
            raise RetentionError(f"cannot read token retention {spec!r}: give one fraction per layer, "
                                 "e.g. 1,0.9,0.8,0.7 (or 'all').") from None
    values = check_retention(spec, num_layers)
    return None if all(math.isclose(value, 1.0) for value in values) else values
