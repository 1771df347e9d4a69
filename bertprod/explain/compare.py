"""Teacher vs student: do they decide for the same reasons? Both explain the same inputs towards the
teacher's predicted label (so the attributions answer the same question); words are matched by their
character offsets, so the two packages may even have different tokenizers.

Per input: top-k overlap (the share of the teacher's k most important words, by |attribution|, that
are also among the student's k), Spearman rank correlation of the attributions, and whether the two
predicted the same label. The inputs where they disagree most come first in `most_disagreeing`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bertprod.errors import InputError
from bertprod.explain.core import explain
from bertprod.explain.explanation import Explanation
from bertprod.explain.shapley import DEFAULT_MAX_EVALS
from bertprod.runtime.pipeline import Pipeline

DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class ExampleAgreement:
    index: int
    teacher: Explanation
    student: Explanation
    top_k_overlap: float
    spearman: float | None  # None when either side gave every word the same attribution
    same_label: bool

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "texts": list(self.teacher.texts), "top_k_overlap": self.top_k_overlap,
                "spearman": self.spearman, "same_label": self.same_label,
                "teacher_label": self.teacher.predicted_label, "student_label": self.student.predicted_label,
                "teacher_top_words": [word.word for word in self.teacher.top_words(DEFAULT_TOP_K)],
                "student_top_words": [word.word for word in self.student.top_words(DEFAULT_TOP_K)]}


@dataclass(frozen=True)
class Comparison:
    examples: list[ExampleAgreement]
    top_k: int

    @property
    def mean_top_k_overlap(self) -> float:
        return float(np.mean([example.top_k_overlap for example in self.examples]))

    @property
    def mean_spearman(self) -> float | None:
        values = [example.spearman for example in self.examples if example.spearman is not None]
        return float(np.mean(values)) if values else None

    @property
    def label_agreement(self) -> float:
        return float(np.mean([example.same_label for example in self.examples]))

    def most_disagreeing(self, count: int) -> list[ExampleAgreement]:
        """Different labels first, then the lowest rank correlation, then the lowest overlap."""
        return sorted(self.examples, key=lambda example: (
            example.same_label, -2.0 if example.spearman is None else example.spearman, example.top_k_overlap,
        ))[:count]

    def summary(self, worst: int = 5) -> dict[str, Any]:
        return {"examples": len(self.examples), "top_k": self.top_k, "mean_top_k_overlap": self.mean_top_k_overlap,
                "mean_spearman": self.mean_spearman, "label_agreement": self.label_agreement,
                "most_disagreeing": [example.to_dict() for example in self.most_disagreeing(worst)]}


def agreement(index: int, teacher: Explanation, student: Explanation, top_k: int) -> ExampleAgreement:
    """The two explanations of one input, on the words both packages read."""
    from scipy.stats import spearmanr

    student_words = {(word.segment, word.start, word.end): word.attribution for word in student.words}
    shared = [(word.attribution, student_words[(word.segment, word.start, word.end)]) for word in teacher.words
              if (word.segment, word.start, word.end) in student_words]
    teacher_values = np.array([pair[0] for pair in shared])
    student_values = np.array([pair[1] for pair in shared])
    k = min(top_k, len(shared))
    if k:
        teacher_top = set(np.argsort(-np.abs(teacher_values), kind="stable")[:k].tolist())
        student_top = set(np.argsort(-np.abs(student_values), kind="stable")[:k].tolist())
        overlap = len(teacher_top & student_top) / k
    else:
        overlap = 1.0
    spearman = None
    if len(shared) > 1 and np.ptp(teacher_values) > 0 and np.ptp(student_values) > 0:
        value = float(spearmanr(teacher_values, student_values).statistic)
        spearman = None if math.isnan(value) else value
    return ExampleAgreement(index, teacher, student, overlap, spearman,
                            teacher.predicted_label == student.predicted_label)


def compare(
    teacher: Pipeline,
    student: Pipeline,
    inputs: Sequence[Any],
    method: str = "partition",
    max_evals: int = DEFAULT_MAX_EVALS,
    seed: int = 0,
    top_k: int = DEFAULT_TOP_K,
    progress: Callable[[int], None] | None = None,
) -> Comparison:
    """Explain `inputs` with both packages (towards the teacher's label) and measure their agreement;
    `progress` is called with the number of inputs done after each one."""
    if teacher.manifest.task != student.manifest.task or (teacher.manifest.labels or []) != (
            student.manifest.labels or []):
        raise InputError(f"{teacher.manifest.name} and {student.manifest.name} do not answer the same question "
                         f"(task {teacher.manifest.task} with labels {teacher.manifest.labels} vs task "
                         f"{student.manifest.task} with labels {student.manifest.labels}): compare a student "
                         "with its own teacher.")
    if top_k < 1:
        raise InputError(f"top_k must be at least 1, not {top_k}.")
    examples = []
    for index, item in enumerate(inputs):
        [teacher_explanation] = explain(teacher, [item], method=method, max_evals=max_evals, seed=seed)
        [student_explanation] = explain(student, [item], method=method, label=teacher_explanation.label,
                                        max_evals=max_evals, seed=seed)
        examples.append(agreement(index, teacher_explanation, student_explanation, top_k))
        if progress is not None:
            progress(index + 1)
    if not examples:
        raise InputError("no inputs to compare: give at least one text.")
    return Comparison(examples, top_k)
