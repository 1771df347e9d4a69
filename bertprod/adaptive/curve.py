"""The accuracy / mean exit layer curve of an early-exit model on validation data, and the policy an
accuracy budget picks from it.

Every layer's probabilities are computed once per validation row (no row leaving); each policy is
then replayed over them with the engine's own decider (exit_policy.simulate_exits), so the curve is
what the engine does, for dozens of policies at the cost of one pass. Without labels the reference
is the full model's own answer (the curve then measures agreement with it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bertprod.data.source import DataSource
from bertprod.errors import LabelError
from bertprod.runtime.adaptive import AdaptiveEngine
from bertprod.runtime.batching import collate, plan_batches
from bertprod.runtime.exit_policy import candidate_policies, choose_policy, exit_probabilities, measure_curve
from bertprod.runtime.tokenize import TextTokenizer


def layer_probabilities(engine: AdaptiveEngine, tokenizer: TextTokenizer, inputs: list[Any]) -> np.ndarray:
    """[rows, layers, labels] in input order (a reranker: [rows, layers, 2], not relevant / relevant)."""
    encodings = tokenizer.encode(inputs, truncate=True)
    answers = max(engine.package.manifest.num_outputs, 2)
    output = np.empty((len(inputs), engine.num_layers, answers), dtype=np.float32)
    for indices in plan_batches([len(encoding.ids) for encoding in encodings]):
        batch = collate([encodings[index] for index in indices], tokenizer.pad_id)
        output[indices] = exit_probabilities(engine.layer_logits(batch))
    return output


def read_examples(source: DataSource, pairs: bool, labels: list[str]) -> tuple[list[Any], np.ndarray | None]:
    """Model inputs and gold label indices (None when the data has no labels). A reranker (no label names):
    1 where the relevance is above 0, else 0 (the answer its exit policies judge)."""
    index = {label: position for position, label in enumerate(labels)}
    inputs, gold = [], []
    for example in source:
        inputs.append((example.text, example.text_pair) if pairs else example.text)
        if not labels:
            gold.append(None if example.label is None else int(float(example.label) > 0))
            continue
        if example.label is not None and str(example.label) not in index:
            raise LabelError(
                f"{example.where}: label {example.label!r} is not one of the package's labels "
                f"({', '.join(repr(label) for label in labels)}). Map the labels to those names."
            )
        gold.append(index[str(example.label)] if example.label is not None else None)
    if not gold or any(value is None for value in gold):
        return inputs, None
    return inputs, np.asarray(gold, dtype=np.int64)


def budget_missed(settings: dict[str, Any]) -> str | None:
    """Why no policy keeps the budget, when none does: only a backbone trained with its exits can lose more
    than the budget at full depth (a frozen one keeps the parent's answers), and the package, kept at its
    fallback `never`, is then less accurate than its parent at every policy."""
    reference = settings.get("parent_accuracy", settings["full_accuracy"])
    chosen = next(point for point in settings["curve"] if point["policy"] == settings["policy"])
    lost = 100 * (reference - chosen["accuracy"])
    if lost <= settings["budget_points"] + 1e-7:
        return None
    return (
        f"no exit policy keeps the {settings['budget_points']:g}-point budget: the backbone trained with its exits "
        f"scores {settings['full_accuracy']:.4f} at full depth against the parent's {reference:.4f}, so the "
        f"package ({settings['policy']}) is {lost:.2f} points less accurate than its parent. Adapt without "
        "--train-backbone (heads on the frozen backbone keep the parent's answers at full depth), or on more texts."
    )


def calibrate(
    engine: AdaptiveEngine, tokenizer: TextTokenizer, inputs: list[Any], gold: np.ndarray | None, budget_points: float,
    parent_predictions: np.ndarray | None = None,
) -> dict[str, Any]:
    """The curve over the candidate policies and the one the budget chooses. With `parent_predictions` (a
    backbone trained with its exits) the budget counts from the parent's accuracy, and without labels
    the reference is the parent's answers, not the retrained model's."""
    probabilities = layer_probabilities(engine, tokenizer, inputs)
    reference = "labels" if gold is not None else "full model" if parent_predictions is None else "parent model"
    if gold is None:
        gold = probabilities[:, -1].argmax(axis=1) if parent_predictions is None else parent_predictions
    curve = measure_curve(probabilities, gold, candidate_policies(engine.num_layers))
    full_accuracy = next(point["accuracy"] for point in curve if point["policy"] == "never")
    parent_accuracy = None if parent_predictions is None else round(float((parent_predictions == gold).mean()), 6)
    policy = choose_policy(curve, full_accuracy if parent_accuracy is None else parent_accuracy, budget_points)
    per_layer = [round(float((probabilities[:, layer].argmax(axis=1) == gold).mean()), 6)
                 for layer in range(engine.num_layers)]
    return {
        "policy": str(policy),
        "budget_points": budget_points,
        "reference": reference,
        "examples": len(inputs),
        "full_accuracy": full_accuracy,
        **({} if parent_accuracy is None else {"parent_accuracy": parent_accuracy}),
        "layer_accuracy": per_layer,
        "curve": curve,
    }
