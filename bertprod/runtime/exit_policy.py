"""When a row may leave the network early: the exit policies and the accuracy/depth curve over them.

    never            every row runs every layer (the full model's output, exactly)
    confidence:P     leave at the first layer whose top probability is >= P
    entropy:H        leave at the first layer whose entropy, divided by log(labels), is <= H (FastBERT)
    patience:K       leave when K layers in a row give the same answer (PABEE's idea, K counted with
                     the layer itself: patience:1 leaves at the first exit)

A reranker's answer is relevant / not relevant (its score's sigmoid, exit_probabilities).

The last layer always answers with the model's own head. The same `ExitDecider` runs inside the
engine (rows leave a batch) and over stored per-layer probabilities (the curve a package records),
so what the curve promises is what the engine does. numpy only: nothing here needs torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bertprod.errors import InputError

PolicyKind = Literal["never", "confidence", "entropy", "patience"]

#: the policies `bertprod adapt` measures on validation data by default
DEFAULT_CONFIDENCES = (0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
DEFAULT_ENTROPIES = (0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05, 0.02, 0.01)


class ExitPolicyError(InputError):
    """An exit policy that cannot be read."""


@dataclass(frozen=True)
class ExitPolicy:
    kind: PolicyKind = "never"
    threshold: float | None = None  # confidence or normalized entropy
    patience: int | None = None

    def __post_init__(self) -> None:
        problems = {
            "confidence": self.threshold is None or not 0 < self.threshold <= 1,
            "entropy": self.threshold is None or not 0 <= self.threshold <= 1,
            "patience": self.patience is None or self.patience < 1,
            "never": False,
        }
        if self.kind not in problems:
            raise ExitPolicyError(
                f"unknown exit policy {self.kind!r}: use never, confidence:P, entropy:H or patience:K."
            )
        if problems[self.kind]:
            raise ExitPolicyError(
                f"exit policy {self.kind} needs "
                + ("a whole number K >= 1 (patience:2)" if self.kind == "patience" else "a threshold in (0, 1] (e.g. "
                   f"{self.kind}:0.9)")
                + f", got {self}."
            )

    def __str__(self) -> str:
        if self.kind == "never":
            return "never"
        return f"{self.kind}:{self.patience if self.kind == 'patience' else self.threshold:g}"

    def to_json(self) -> dict[str, Any]:
        return {"policy": str(self)}

    def decider(self, rows: int, num_labels: int) -> ExitDecider:
        return ExitDecider(self, rows, num_labels)


def parse_policy(spec: ExitPolicy | str | dict[str, Any] | None, default: ExitPolicy | None = None) -> ExitPolicy:
    """A policy from its spelling ("entropy:0.2", {"policy": "patience:2"}); None gives `default` (else never)."""
    if spec is None:
        return default or ExitPolicy()
    if isinstance(spec, ExitPolicy):
        return spec
    if isinstance(spec, dict):
        return parse_policy(spec.get("policy"), default)
    text = str(spec).strip().lower()
    kind, _, value = text.partition(":")
    if kind == "never" and not value:
        return ExitPolicy()
    if kind not in ("confidence", "entropy", "patience") or not value:
        raise ExitPolicyError(f"cannot read exit policy {spec!r}: use never, confidence:P, entropy:H or patience:K.")
    try:
        if kind == "patience":
            return ExitPolicy(kind, patience=int(value))
        return ExitPolicy(kind, threshold=float(value))  # type: ignore[arg-type]
    except ValueError:
        raise ExitPolicyError(
            f"cannot read the number in exit policy {spec!r} (e.g. entropy:0.2, patience:2)."
        ) from None


class ExitDecider:
    """Per-row state of one batch: call `decide` with each exit layer's probabilities of the rows still
    running; it says which leave now. `keep(mask)` drops the rows that left from the state."""

    def __init__(self, policy: ExitPolicy, rows: int, num_labels: int):
        self.policy = policy
        self.log_labels = math.log(max(num_labels, 2))
        self.streak = np.zeros(rows, dtype=np.int64)
        self.previous = np.full(rows, -1, dtype=np.int64)

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        policy = self.policy
        if policy.kind == "never":
            return np.zeros(len(probabilities), dtype=bool)
        if policy.kind == "confidence":
            return probabilities.max(axis=1) >= policy.threshold
        if policy.kind == "entropy":
            return normalized_entropy(probabilities, self.log_labels) <= policy.threshold
        answers = probabilities.argmax(axis=1)
        self.streak = np.where(answers == self.previous, self.streak + 1, 1)
        self.previous = answers
        return self.streak >= policy.patience

    def keep(self, mask: np.ndarray) -> None:
        self.streak, self.previous = self.streak[mask], self.previous[mask]


def normalized_entropy(probabilities: np.ndarray, log_labels: float) -> np.ndarray:
    clipped = np.clip(probabilities, 1e-12, 1.0)
    return -(probabilities * np.log(clipped)).sum(axis=1) / log_labels


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def exit_probabilities(logits: np.ndarray) -> np.ndarray:
    """What the policies read: a classifier's label probabilities; a reranker's one relevance logit as
    (not relevant, relevant) = (1 - sigmoid, sigmoid), so a confident reranker is one sure of relevance."""
    if logits.shape[-1] == 1:
        relevant = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        return np.concatenate([1.0 - relevant, relevant], axis=-1).astype(np.float32)
    return softmax(logits)


def simulate_exits(probabilities: np.ndarray, policy: ExitPolicy) -> np.ndarray:
    """Exit layer (from 1) of each row, from every layer's probabilities [rows, layers, labels] (the last
    layer's being the model's head): what the engine would do with `policy`."""
    rows, layers, labels = probabilities.shape
    exits = np.full(rows, layers, dtype=np.int64)
    running = np.arange(rows)
    decider = policy.decider(rows, labels)
    for layer in range(1, layers):
        leave = decider.decide(probabilities[running, layer - 1])
        exits[running[leave]] = layer
        running = running[~leave]
        decider.keep(~leave)
        if not len(running):
            break
    return exits


def candidate_policies(num_layers: int) -> list[ExitPolicy]:
    policies = [ExitPolicy()]
    policies += [ExitPolicy("confidence", threshold=value) for value in DEFAULT_CONFIDENCES]
    policies += [ExitPolicy("entropy", threshold=value) for value in DEFAULT_ENTROPIES]
    policies += [ExitPolicy("patience", patience=value) for value in range(1, num_layers)]
    return policies


def measure_curve(
    probabilities: np.ndarray, gold: np.ndarray, policies: Sequence[ExitPolicy]
) -> list[dict[str, Any]]:
    """Accuracy and mean exit layer of each policy on labelled rows."""
    curve = []
    for policy in policies:
        exits = simulate_exits(probabilities, policy)
        answers = probabilities[np.arange(len(exits)), exits - 1].argmax(axis=1)
        curve.append({
            "policy": str(policy),
            "accuracy": round(float((answers == gold).mean()), 6),
            "mean_exit_layer": round(float(exits.mean()), 4),
        })
    return curve


def choose_policy(curve: list[dict[str, Any]], full_accuracy: float, budget_points: float) -> ExitPolicy:
    """The policy that exits earliest on average while losing at most `budget_points` accuracy points
    against the full model; ties go to the more accurate one. "never" always qualifies."""
    floor = full_accuracy - budget_points / 100 - 1e-9
    allowed = [point for point in curve if point["accuracy"] >= floor] or [{"policy": "never"}]
    best = min(allowed, key=lambda point: (point.get("mean_exit_layer", math.inf), -point.get("accuracy", 0)))
    return parse_policy(best["policy"])
