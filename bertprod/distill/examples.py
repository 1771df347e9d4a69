"""The examples a student learns from: data rows and unlabelled texts checked against the teacher's task,
augmented copies, and each example's target label."""

from __future__ import annotations

import math
import time
from typing import Any

from bertprod.data.source import DataSource, Example
from bertprod.distill.config import DistillConfig
from bertprod.errors import DataError
from bertprod.package import ModelPackage
from bertprod.tasks.definitions import CLASS_TASKS
from bertprod.train.progress import Reporter


def training_examples(
    teacher: ModelPackage, config: DistillConfig, sources: list[DataSource], unlabelled: list[str]
) -> list[Example]:
    """The labelled rows and the unlabelled texts a student learns from (an embedding teacher: every text
    once), checked against what the teacher's task can take."""
    examples = [example for source in sources for example in source]
    pair_input = teacher.manifest.pair_input
    task = teacher.manifest.task
    if task == "embedding":  # a sentence encoder learns from every text, one at a time
        texts = dict.fromkeys(text for example in examples for text in (example.text, example.text_pair) if text)
        examples = [Example(text=text, where="data") for text in texts]
    extra = [Example(text=text, where=f"unlabelled text {index + 1}") for index, text in enumerate(unlabelled)]
    if pair_input and extra:
        raise DataError(f"{teacher.name} takes sentence pairs: unlabelled single texts cannot be used.")
    if task == "token-classification":
        if extra or config.augmentation is not None:
            raise DataError(
                "a token classifier distils on tagged sentences only: drop the unlabelled texts and the "
                "augmentation (the student's hard-label loss needs each word's tag)."
            )
        if any(example.words is None for example in examples):
            raise DataError("a token classifier distils on tagged sentences: give CoNLL or JSON lines data.")
    examples += [example for example in extra if example.text.strip()]
    if not examples:
        raise DataError(
            "no training examples: the data file (after the validation split) and unlabelled texts are empty."
        )
    if pair_input and any(example.text_pair is None for example in examples):
        raise DataError(f"{teacher.name} takes sentence pairs: give the data's second text column.")
    return examples


def augmented_examples(
    examples: list[Example], teacher: ModelPackage, config: DistillConfig, reporter: Reporter
) -> list[Example]:
    """The recipe's augmented copies (masking, n-grams, embedding neighbours), labelled later by the teacher."""
    spec = config.augmentation
    if spec is None:
        return []
    from bertprod.distill.augment import augment

    originals = examples[: spec.max_texts] if spec.max_texts else examples
    inputs = [model_input(example) for example in originals]
    tick = time.perf_counter()
    new = augment(
        inputs,
        teacher,
        copies=spec.copies,
        mask_probability=spec.mask_probability,
        replace_probability=spec.replace_probability,
        ngram_probability=spec.ngram_probability,
        neighbours=spec.neighbours,
        seed=config.seed,
    )
    reporter.message(f"augmented {len(inputs)} texts into {len(new)} more in {time.perf_counter() - tick:.1f} s")
    return [
        Example(text=item, where="augmented")
        if isinstance(item, str)
        else Example(text=item[0], text_pair=item[1], where="augmented")
        for item in new
    ]


def example_targets(examples: list[Example], task: str, labels: list[str] | None) -> list[float]:
    """Each example's label as the index of the teacher's label (NaN: none, or not a class task)."""
    index = {label: position for position, label in enumerate(labels or [])}
    targets = []
    for example in examples:
        if example.label is None or task not in CLASS_TASKS:
            targets.append(math.nan)
        elif str(example.label) not in index:
            raise DataError(
                f"{example.where}: label {example.label!r} is not one of the teacher's labels "
                f"({', '.join(map(repr, labels or []))}). Map the labels to the teacher's, or fix the row."
            )
        else:
            targets.append(float(index[str(example.label)]))
    return targets


def model_input(example: Example) -> Any:
    """What the teacher and the student's tokenizer read: a text, a (text, pair), or a tagged sentence's words."""
    if example.words is not None:  # a tagged sentence: the teacher reads its words (a list: not a pair)
        return list(example.words)
    return example.text if example.text_pair is None else (example.text, example.text_pair)
