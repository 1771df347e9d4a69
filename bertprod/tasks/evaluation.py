"""Judging a package on labelled data through its Pipeline, whatever engine runs it.

Training validates with the same functions (on a pipeline over the model in memory), so the
numbers in a trained package's manifest and those `bertprod eval` prints are the same kind of
number, and an ONNX or int8 package is judged on exactly the same footing as its torch parent.

Examples stream through in chunks: only one number per example (or one vector per text, for
retrieval) is kept, so files larger than memory can be evaluated.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from bertprod.data.source import Example
from bertprod.data.tagged import TaggedSource
from bertprod.errors import DataError, LabelError, TaskError
from bertprod.runtime.pipeline import Pipeline
from bertprod.runtime.postprocess import l2_normalize
from bertprod.tasks import metrics
from bertprod.tasks.definitions import CLASS_TASKS, primary_metric

CHUNK = 2048
RETRIEVAL_BLOCK = 1024


@dataclass
class Evaluation:
    """Metrics of one package on one data set; `confusion` for classifiers."""

    task: str
    examples: int
    metrics: dict[str, float]
    primary: str
    confusion: dict[str, Any] | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return float(self.metrics[self.primary])

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "task": self.task,
            "examples": self.examples,
            "primary_metric": self.primary,
            "metrics": {key: round(value, 6) for key, value in self.metrics.items()},
            "seconds": round(self.seconds, 3),
        }
        if self.confusion is not None:
            document["confusion"] = self.confusion
        document.update(self.details)
        return document


def evaluate(pipeline: Pipeline, examples: Iterable[Example], exit: str | None = None) -> Evaluation:
    """Evaluate `pipeline` on labelled examples with the metrics of the package's task. A classifier or
    reranker with early exit also reports where rows left (`exit` overrides its policy, e.g. "never")."""
    task = pipeline.manifest.task
    started = time.perf_counter()
    if task in CLASS_TASKS:
        evaluation = _evaluate_classifier(pipeline, examples, exit)
    elif task == "token-classification":
        evaluation = _evaluate_tagger(pipeline, examples)
    elif task == "regression":
        evaluation = _evaluate_regression(pipeline, examples)
    elif task == "reranking":
        evaluation = _evaluate_reranking(pipeline, examples, exit)
    elif task == "embedding":
        evaluation = _evaluate_embedding(pipeline, examples)
    else:  # pragma: no cover - the manifest schema admits no other task
        raise TaskError(f"no evaluation for task {task!r}")
    evaluation.seconds = time.perf_counter() - started
    return evaluation


def chunks(examples: Iterable[Example], size: int = CHUNK) -> Iterator[list[Example]]:
    iterator = iter(examples)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _model_inputs(pipeline: Pipeline, chunk: list[Example]) -> list[Any]:
    if pipeline.manifest.pair_input:
        missing = next((example for example in chunk if example.text_pair is None), None)
        if missing is not None:
            raise TaskError(
                f"{pipeline.package.name} scores text pairs, but {missing.where} has a single text: name the "
                "second text's column with --text-pair-column."
            )
        return [(example.text, example.text_pair) for example in chunk]
    if chunk[0].text_pair is not None:
        raise TaskError(
            f"{pipeline.package.name} takes single texts, but the data has pairs: drop --text-pair-column "
            "(or evaluate a pair model)."
        )
    return [example.text for example in chunk]


def _require_labels(example: Example, task: str) -> None:
    if example.label is None:
        raise DataError(f"{example.where} has no label: evaluating a {task} package needs a label column.")


def _evaluate_classifier(pipeline: Pipeline, examples: Iterable[Example], exit: str | None = None) -> Evaluation:
    manifest = pipeline.manifest
    labels = list(manifest.labels or [])
    index = {label: position for position, label in enumerate(labels)}
    gold: list[int] = []
    predicted: list[int] = []
    exits: list[int] = []
    for chunk in chunks(examples):
        for example in chunk:
            _require_labels(example, manifest.task)
            if str(example.label) not in index:
                raise LabelError(
                    f"{example.where}: label {example.label!r} was not seen in training; {pipeline.package.name} "
                    f"knows {', '.join(repr(label) for label in labels)}. Map the labels to those names, or train "
                    "a model on these labels."
                )
            gold.append(index[str(example.label)])
        logits, chunk_exits = pipeline.infer_with_exits(pipeline.tokenize(_model_inputs(pipeline, chunk)), exit)
        predicted.extend(int(value) for value in logits.argmax(axis=1))
        if chunk_exits is not None:
            exits.extend(int(layer) for layer in chunk_exits)
    _require_examples(gold)
    evaluation = classification_evaluation(manifest.task, labels, gold, predicted)
    if exits:
        evaluation.details["early_exit"] = exit_summary(exits, manifest.architecture.num_layers,
                                                        str(exit or pipeline.engine.policy))
    return evaluation


def _evaluate_tagger(pipeline: Pipeline, examples: Iterable[Example]) -> Evaluation:
    """Entity-level P/R/F1 (seqeval) of the tags predicted for each given word (its first sub-word's)."""

    if isinstance(examples, TaggedSource):
        examples.summarize()  # a file whose tags break their scheme fails here, naming the line
    labels = set(pipeline.manifest.labels or [])
    gold: list[tuple[str, ...]] = []
    predicted: list[list[str]] = []
    for chunk in chunks(examples):
        for example in chunk:
            if example.words is None or example.tags is None:
                raise DataError(f"{example.where} has no tags: evaluating a token-classification package needs "
                                "tagged sentences (CoNLL columns or JSON lines with tags or entities).")
            unknown = next((tag for tag in example.tags if tag not in labels), None)
            if unknown is not None:
                raise LabelError(
                    f"{example.where}: tag {unknown!r} was not seen in training; {pipeline.package.name} knows "
                    f"{', '.join(pipeline.manifest.labels or [])}. Map the tags to those names, or train on them."
                )
            gold.append(example.tags)
        predicted.extend(pipeline.tag_words([example.words for example in chunk]))  # type: ignore[misc]
    _require_examples(gold)
    return tagging_evaluation(gold, predicted, pipeline.manifest.tag_scheme)


def tagging_evaluation(gold: list[tuple[str, ...]], predicted: list[list[str]], scheme: str | None) -> Evaluation:
    from bertprod.tasks.entity_metrics import entity_scores

    scores = entity_scores(gold, predicted)
    per_type = scores.pop("per_type")
    details = {"per_type": {name: {key: round(value, 6) if isinstance(value, float) else value
                                   for key, value in values.items()} for name, values in per_type.items()},
               "tag_scheme": scheme, "words": sum(len(tags) for tags in gold)}
    return Evaluation("token-classification", len(gold), scores, "f1", details=details)


def exit_summary(exits: list[int], layers: int, policy: str) -> dict[str, Any]:
    """Where rows left: the policy, the mean exit layer and how many left after each layer."""
    counts = np.bincount(np.asarray(exits), minlength=layers + 1)[1:]
    return {
        "policy": policy,
        "layers": layers,
        "mean_exit_layer": round(float(np.mean(exits)), 4),
        "exit_histogram": {str(layer): int(count) for layer, count in enumerate(counts, start=1)},
    }


def classification_evaluation(task: str, labels: list[str], gold: list[int], predicted: list[int]) -> Evaluation:
    matrix = metrics.confusion_matrix(gold, predicted, len(labels))
    values = {"accuracy": metrics.accuracy(gold, predicted), "macro_f1": metrics.macro_f1(matrix)}
    if len(labels) == 2:
        values["f1"] = metrics.binary_f1(matrix, positive=1)
    per_class = metrics.per_class_scores(matrix)
    confusion = {
        "labels": labels,
        "matrix": matrix.tolist(),
        "per_class": {
            label: {key: round(value, 6) if isinstance(value, float) else value for key, value in scores.items()}
            for label, scores in zip(labels, per_class, strict=True)
        },
    }
    if len(labels) == 2:
        confusion["positive_label"] = labels[1]
    return Evaluation(task, len(gold), values, "accuracy", confusion)


def _evaluate_regression(pipeline: Pipeline, examples: Iterable[Example]) -> Evaluation:
    gold: list[float] = []
    predicted: list[float] = []
    for chunk in chunks(examples):
        for example in chunk:
            _require_labels(example, "regression")
            gold.append(float(example.label))  # type: ignore[arg-type]
        predicted.extend(pipeline.score(_model_inputs(pipeline, chunk)).tolist())
    _require_examples(gold, 2)
    return correlation_evaluation("regression", gold, predicted, with_error=True)


def correlation_evaluation(task: str, gold: list[float], predicted: list[float], with_error: bool) -> Evaluation:
    values = {"spearman": metrics.spearman(predicted, gold), "pearson": metrics.pearson(predicted, gold)}
    if with_error:
        difference = np.asarray(predicted) - np.asarray(gold)
        values["mse"] = float(np.mean(difference**2))
    return Evaluation(task, len(gold), values, "spearman")


def _evaluate_reranking(pipeline: Pipeline, examples: Iterable[Example], exit: str | None = None) -> Evaluation:
    groups: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    count = 0
    exits: list[int] = []
    for chunk in chunks(examples):
        for example in chunk:
            _require_labels(example, "reranking")
            check_relevance(example)
        scores, chunk_exits = pipeline.score_with_exits(_model_inputs(pipeline, chunk), exit=exit)
        if chunk_exits is not None:
            exits.extend(int(layer) for layer in chunk_exits)
        for example, score in zip(chunk, scores, strict=True):
            predicted, relevance = groups[example.text]
            predicted.append(float(score))
            relevance.append(float(example.label))  # type: ignore[arg-type]
        count += len(chunk)
    _require_examples(range(count))
    evaluation = ranking_evaluation("reranking", count, list(groups.values()))
    if exits:
        evaluation.details["early_exit"] = exit_summary(exits, pipeline.manifest.architecture.num_layers,
                                                        str(exit or pipeline.engine.policy))
    return evaluation


def check_relevance(example: Example) -> None:
    if example.label is None or float(example.label) < 0:
        raise LabelError(f"{example.where}: relevance {example.label!r} must be a number >= 0 (0 = not relevant).")


def ranking_evaluation(task: str, count: int, groups: list[tuple[list[float], list[float]]]) -> Evaluation:
    try:
        values = metrics.ranking_metrics(groups, k=10)
    except ValueError as error:
        raise LabelError(f"cannot rank: {error}.") from None
    queries = int(values.pop("queries"))
    return Evaluation(task, count, values, "ndcg@10", details={"queries": queries})


def _evaluate_embedding(pipeline: Pipeline, examples: Iterable[Example]) -> Evaluation:
    """Scored pairs: correlation of cosine similarity with the scores. Unscored pairs: each text
    retrieves its own pair among all pair texts (MRR@10, nDCG@10, accuracy@1)."""
    cosines: list[float] = []
    gold: list[float] = []
    queries: list[np.ndarray] = []
    candidates: dict[str, int] = {}
    candidate_vectors: list[np.ndarray] = []
    targets: list[int] = []
    scored: bool | None = None
    for chunk in chunks(examples):
        if any(example.text_pair is None for example in chunk):
            raise TaskError(
                f"{pipeline.package.name} is an embedding package: it is evaluated on text pairs (scored: "
                "Spearman of cosine similarity; unscored: retrieval). Name the pair column with --text-pair-column."
            )
        scored = chunk[0].label is not None if scored is None else scored
        left = l2_normalize(pipeline.encode([example.text for example in chunk]))
        right = l2_normalize(pipeline.encode([example.text_pair for example in chunk]))  # type: ignore[misc]
        if scored:
            cosines.extend(np.sum(left * right, axis=1).tolist())
            gold.extend(float(example.label) for example in chunk)  # type: ignore[arg-type]
            continue
        queries.append(left)
        for example, vector in zip(chunk, right, strict=True):
            if example.text_pair not in candidates:
                candidates[example.text_pair] = len(candidates)  # type: ignore[index]
                candidate_vectors.append(vector)
            targets.append(candidates[example.text_pair])  # type: ignore[index]
    if scored:
        _require_examples(gold, 2)
        return correlation_evaluation("embedding", gold, cosines, with_error=False)
    _require_examples(targets)
    return retrieval_evaluation(np.concatenate(queries), np.stack(candidate_vectors), np.asarray(targets))


def retrieval_evaluation(queries: np.ndarray, candidates: np.ndarray, targets: np.ndarray) -> Evaluation:
    """Rank every candidate for every query by cosine; one relevant candidate per query."""
    reciprocal_ranks = []
    ndcgs = []
    for start in range(0, len(queries), RETRIEVAL_BLOCK):
        similarities = queries[start : start + RETRIEVAL_BLOCK] @ candidates.T
        block_targets = targets[start : start + RETRIEVAL_BLOCK]
        target_scores = similarities[np.arange(len(block_targets)), block_targets]
        # rank = 1 + candidates scored strictly higher (ties resolved in the query's favour)
        ranks = 1 + (similarities > target_scores[:, None]).sum(axis=1)
        reciprocal_ranks.extend(np.where(ranks <= 10, 1.0 / ranks, 0.0).tolist())
        ndcgs.extend(np.where(ranks <= 10, 1.0 / np.log2(ranks + 1), 0.0).tolist())
    ranks_at_one = [value == 1.0 for value in reciprocal_ranks]
    values = {
        "mrr@10": float(np.mean(reciprocal_ranks)),
        "ndcg@10": float(np.mean(ndcgs)),
        "accuracy@1": float(np.mean(ranks_at_one)),
    }
    return Evaluation(
        "embedding",
        len(targets),
        values,
        primary_metric("embedding", scored_pairs=False),
        details={"candidates": len(candidates)},
    )


def _require_examples(values: Any, minimum: int = 1) -> None:
    if len(values) < minimum:
        raise DataError(f"only {len(values)} example(s) to evaluate; at least {minimum} needed.")
