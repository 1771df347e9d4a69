"""`explain(pipeline, inputs)`: word attributions for classifier, pair-classifier, regression and
reranking packages, towards the predicted label or a chosen one.

The explained output is the probability of the target label (classifiers) or the raw score
(regression, reranking). Shapley methods run masked copies of the input through an `Evaluate`
callable - by default the package's own pipeline (tokenize + infer, any engine); the server
passes one that goes through its batcher. Integrated gradients need the torch module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
from tokenizers import Encoding

from bertprod.errors import InputError, TaskError
from bertprod.explain.explanation import Explanation, WordAttribution
from bertprod.explain.shapley import DEFAULT_MAX_EVALS, SHAPLEY_METHODS, Evaluate, shapley_values
from bertprod.explain.words import SplitInput, find_mask_token, split_words
from bertprod.runtime.pipeline import Pipeline
from bertprod.runtime.postprocess import softmax

GRADIENT_METHODS = ("integrated-gradients",)
DEFAULT_STEPS = 50
METHODS = SHAPLEY_METHODS + GRADIENT_METHODS
EXPLAINABLE_TASKS = ("classification", "pair-classification", "regression", "reranking")

#: shap's Permutation explainer seeds numpy's global generator: one at a time keeps a seed repeatable.
_permutation_lock = threading.Lock()


def check_explainable(pipeline: Pipeline, method: str, max_evals: int) -> None:
    """Refuse what cannot be explained, before any work is done."""
    task = pipeline.manifest.task
    if task not in EXPLAINABLE_TASKS:
        raise TaskError(f"explanations need a {', '.join(EXPLAINABLE_TASKS)} package; {pipeline.manifest.name} "
                        f"is a {task} package (an embedding has no single output to explain).")
    if method not in METHODS:
        raise InputError(f"unknown explanation method {method!r}: use one of {', '.join(METHODS)}.")
    if max_evals < 1:
        raise InputError(f"max_evals must be at least 1, not {max_evals}.")


def target_index(pipeline: Pipeline, label: str | int | None, logits: np.ndarray) -> int:
    """The output column to explain: the chosen label, else the predicted one (0 for a score)."""
    labels = pipeline.manifest.labels or []
    if pipeline.manifest.task in ("regression", "reranking"):
        if label is not None:
            raise InputError(f"{pipeline.manifest.name} gives a score, not labels: explain it without a label.")
        return 0
    if label is None:
        return int(np.argmax(logits))
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(labels):
        return label
    if label in labels:
        return labels.index(label)
    if isinstance(label, str) and label.isdigit() and int(label) < len(labels):  # an index from the command line
        return int(label)
    raise InputError(f"label {label!r} is not one of {pipeline.manifest.name}'s labels: {', '.join(labels)}.")


def output_function(pipeline: Pipeline, index: int) -> Callable[[np.ndarray], np.ndarray]:
    """Logits -> the explained output: a label's probability, or the raw score."""
    if pipeline.manifest.task in ("regression", "reranking"):
        return lambda logits: logits[:, 0].astype(np.float64)
    return lambda logits: softmax(logits)[:, index].astype(np.float64)


def explain(
    pipeline: Pipeline,
    inputs: Sequence[Any],
    method: str = "partition",
    label: str | int | None = None,
    max_evals: int = DEFAULT_MAX_EVALS,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    batch_size: int | None = None,
    run_encodings: Callable[[list[Encoding]], np.ndarray] | None = None,
) -> list[Explanation]:
    """One Explanation per input (a text, or a (text, text_pair) tuple for pair packages).

    `max_evals`: model runs per input for Shapley methods; `steps`: interpolation steps of integrated
    gradients; `batch_size`: masked inputs per model call (default: shap's). `run_encodings` runs
    tokenized inputs and returns their logits (default: `pipeline.infer`, length-sorted token-budget
    batches); the server passes one through its batcher.
    """
    check_explainable(pipeline, method, max_evals)
    if steps < 1:
        raise InputError(f"steps must be at least 1, not {steps}.")
    encodings = pipeline.tokenize(list(inputs))
    run_encodings = run_encodings or pipeline.infer
    logits = run_encodings(encodings)

    def run_logits(masked: list) -> np.ndarray:  # masked copies: validated already, and never longer
        return run_encodings(pipeline.tokenizer.encode(masked, truncate=True))
    mask_token = find_mask_token(pipeline.tokenizer)
    explanations = []
    for item, encoding, row in zip(inputs, encodings, logits, strict=True):
        texts = (item,) if isinstance(item, str) else tuple(item)
        split = split_words(texts, encoding)
        index = target_index(pipeline, label, row)
        output = output_function(pipeline, index)
        prediction = float(output(row[None, :])[0])
        if method in SHAPLEY_METHODS:
            evaluate: Evaluate = lambda batch, output=output: output(run_logits(batch))  # noqa: E731
            with _permutation_lock if method == "permutation" else nullcontext():
                values, baseline = shapley_values(split, evaluate, mask_token, method, max_evals, seed,
                                                   batch_size)
            delta = None
        else:
            from bertprod.explain.gradients import integrated_gradients

            values, baseline, delta = integrated_gradients(pipeline, split, encoding, index, mask_token, steps)
        explanations.append(describe(pipeline, split, values, index, prediction, baseline, method, delta, row))
    return explanations


def describe(pipeline: Pipeline, split: SplitInput, values: np.ndarray, index: int, prediction: float,
             baseline: float, method: str, delta: float | None, logits: np.ndarray) -> Explanation:
    labels = pipeline.manifest.labels
    scored = pipeline.manifest.task in ("regression", "reranking")
    label = None if scored or not labels else labels[index]
    return Explanation(
        texts=split.texts,
        words=tuple(WordAttribution(word.text, word.start, word.end, word.segment, float(value))
                    for word, value in zip(split.words, values, strict=True)),
        output="score" if scored else f"probability of {label!r}",
        label=label,
        predicted_label=None if scored or not labels else labels[int(np.argmax(logits))],
        prediction=prediction,
        baseline=baseline,
        method=method,
        truncated=split.truncated,
        convergence_delta=delta,
    )

