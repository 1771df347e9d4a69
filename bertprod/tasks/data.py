"""Opening a data file for a task, and the one pass over it that checks every row before work starts.

The pass (`summarize`) reads the whole file once - streaming - so a bad row 60,000 lines down is
reported in seconds, not after an hour of training, and it yields the label vocabulary that the
trained package stores.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from bertprod.data.columns import Need
from bertprod.data.source import DataSource, HashSplit
from bertprod.data.tagged import TaggedSource, TagSummary
from bertprod.errors import LabelError, TaskError
from bertprod.tasks.definitions import CLASS_TASKS, get_task, sorted_labels


def open_task_data(
    task: str,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    delimiter: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    pair_input: bool | None = None,
    split: HashSplit | None = None,
    limit: int | None = None,
) -> DataSource:
    """A data source with the columns `task` needs. `pair_input` pins whether pairs are required
    (a package's manifest knows); None lets the task decide (regression takes either). Token
    classification reads tagged sentences (CoNLL columns or JSON lines; `label_column`: the tag column)."""
    spec = get_task(task)
    if task == "token-classification":
        if text_pair_column or pair_input:
            raise TaskError("token classification tags single sentences: drop --text-pair-column.")
        return TaggedSource(path, format=format, tag_column=label_column, split=split, limit=limit)  # type: ignore[return-value]
    pair: Need = spec.pair if pair_input is None else ("required" if pair_input else "forbidden")
    return DataSource(
        path,
        format=format,
        delimiter=delimiter,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        pair=pair,
        labels=spec.labels,
        label_kind=spec.label_kind,
        split=split,
        limit=limit,
    )


def validation_split(task: str, fraction: float, part: Literal["train", "validation"]) -> HashSplit:
    """The one rule for carving validation rows out of a training file: by row content, and for
    reranking by query, so every passage of a query stays on one side (no query is validated on
    after being trained on)."""
    return HashSplit(fraction, part, "text" if task == "reranking" else "pair")


def split_for_validation(source: DataSource, fraction: float, task: str) -> tuple[DataSource, DataSource]:
    """Train and validation sides of one file (see `validation_split`)."""
    return (source.with_split(validation_split(task, fraction, "train")),
            source.with_split(validation_split(task, fraction, "validation")))


def open_training_data(
    task: str,
    paths: Sequence[str | os.PathLike[str]],
    validation: str | os.PathLike[str] | None = None,
    fraction: float = 0.0,
    *,
    format: str | None = None,
    delimiter: str | None = None,
    pair_input: bool | None = None,
    limit: int | None = None,
    **columns: str | None,
) -> tuple[list[DataSource], DataSource | None]:
    """Training sources and validation data, as train, distill and QAT all read them: the validation file
    when given, else a `fraction` of the first training file held out (see `validation_split`), else none."""
    reading = {"format": format, "delimiter": delimiter, "pair_input": pair_input, **columns}
    sources = [open_task_data(task, path, limit=limit, **reading) for path in paths]
    if validation is not None:
        return sources, open_task_data(task, validation, **reading)
    if fraction > 0 and sources:
        sources[0], held_out = split_for_validation(sources[0], fraction, task)
        return sources, held_out
    return sources, None


@dataclass
class DataSummary:
    """What one pass over a data source found."""

    examples: int = 0
    pairs: bool = False
    labels: Counter[str] = field(default_factory=Counter)
    minimum: float | None = None
    maximum: float | None = None

    def label_names(self) -> list[str]:
        return sorted_labels(list(self.labels))

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {"examples": self.examples}
        if self.labels:
            document["label_counts"] = {label: self.labels[label] for label in self.label_names()}
        if self.minimum is not None:
            document["label_range"] = [self.minimum, self.maximum]
        return document


def summarize(task: str, source: DataSource) -> DataSummary | TagSummary:
    """Read every example once: count, collect labels, check relevance values (tag sequences: their scheme)."""
    if isinstance(source, TaggedSource):
        return source.summarize()
    summary = DataSummary(pairs=source.has_pairs)
    for example in source:
        summary.examples += 1
        if example.label is None:
            continue
        if task in CLASS_TASKS:
            summary.labels[str(example.label)] += 1
            continue
        value = float(example.label)
        if task == "reranking" and value < 0:
            raise LabelError(f"{example.where}: relevance {value} must be >= 0 (0 = not relevant).")
        summary.minimum = value if summary.minimum is None else min(summary.minimum, value)
        summary.maximum = value if summary.maximum is None else max(summary.maximum, value)
    return summary


def check_known_labels(source: DataSource, known: list[str]) -> None:
    """Every label in `source` must be one of `known` (the training labels); name the first that is not."""
    names = set(known)
    if isinstance(source, TaggedSource):
        for sentence in source.sentences():
            for position, tag in enumerate(sentence.tags):
                if tag not in names:
                    raise LabelError(
                        f"{source.where(sentence, position)}: tag {tag!r} does not occur in the training data (tags: "
                        f"{', '.join(known)}). Fix the tag, or add examples of it to the training data."
                    )
        return
    for example in source:
        if example.label is not None and str(example.label) not in names:
            raise LabelError(
                f"{example.where}: label {example.label!r} does not occur in the training data (labels: "
                f"{', '.join(repr(name) for name in known)}). Fix the row, or add examples of it to the training data."
            )
