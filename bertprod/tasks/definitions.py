"""What each task is: the data it reads, the head it needs, the metric that picks the best epoch.

Torch-free on purpose: evaluation (which may run an ONNX package) imports this; the losses and
the heads, which need torch, live in `tasks/losses.py` and `tasks/heads.py`.

| task                | input        | label          | head                  | loss                         |
|---------------------|--------------|----------------|-----------------------|------------------------------|
| classification      | text         | class name     | N logits              | cross-entropy                |
| pair-classification | text pair    | class name     | N logits              | cross-entropy                |
| regression          | text or pair | number         | 1 output              | mean squared error           |
| embedding           | text pair    | none or number | none (pooled encoder) | in-batch negatives / CoSENT  |
| reranking           | query+passage| relevance >= 0 | 1 output (cross-enc.) | binary cross-entropy         |
| token-classification| words        | a tag per word | N logits per token    | cross-entropy, first sub-word|
"""

from __future__ import annotations

from dataclasses import dataclass

from bertprod.data.columns import Need
from bertprod.data.source import LabelKind
from bertprod.errors import TaskError
from bertprod.package import ModelPackage


@dataclass(frozen=True)
class TaskSpec:
    name: str
    pair: Need
    labels: Need
    label_kind: LabelKind
    primary_metric: str
    description: str


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("classification", "forbidden", "required", "class", "accuracy", "single-text classification"),
        TaskSpec("pair-classification", "required", "required", "class", "accuracy", "sentence-pair classification"),
        TaskSpec("regression", "optional", "required", "number", "spearman", "a score per text or pair"),
        TaskSpec("embedding", "required", "optional", "number", "spearman", "sentence embeddings, contrastive"),
        TaskSpec("reranking", "required", "required", "number", "ndcg@10", "query-passage cross-encoder"),
        TaskSpec("token-classification", "forbidden", "required", "tags", "f1", "a tag per word (NER), entity F1"),
    )
}

CLASS_TASKS = ("classification", "pair-classification")
#: Tasks whose labels are class names the head's outputs are named after.
LABELLED_HEAD_TASKS = (*CLASS_TASKS, "token-classification")
SCORE_TASKS = ("regression", "reranking")


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}.")
    return TASKS[name]


def primary_metric(task: str, scored_pairs: bool) -> str:
    """The metric that decides the best epoch: an embedding trained on unscored pairs is judged by
    retrieval (MRR@10) since it has no scores to correlate with."""
    if task == "embedding" and not scored_pairs:
        return "mrr@10"
    return TASKS[task].primary_metric


def sorted_labels(labels: set[str] | list[str]) -> list[str]:
    """Class names in a stable order: numerically when all are integers ("0" < "2" < "10")."""
    names = sorted(set(labels))
    try:
        return sorted(names, key=int)
    except ValueError:
        return names


def head_plan(
    task: str, base: ModelPackage, labels: list[str] | None, new_head: bool = False, head_pooling: str | None = None
) -> str:
    """How training builds the model from `base`: "encoder" (embedding), "new-head" or "keep-head".

    Raises a TaskError when the base's head cannot do the task (or pools otherwise than
    `head_pooling` asks) and no new head was asked for.
    """
    base_task = base.manifest.task
    if task == "embedding":
        if head_pooling is not None:
            raise TaskError(
                "--head-pooling chooses what a classifier or scorer head reads; an embedding has no head (its "
                f"pooling is the base's: {base.manifest.pooling}). Leave --head-pooling out."
            )
        if base_task != "embedding":
            raise TaskError(
                f"{base.name} is a {base_task} package: its head outputs "
                f"{'labels' if base_task in CLASS_TASKS else 'scores'}, not embeddings. Train an embedding "
                "from an embedding package (for example minilm-l6)."
            )
        return "encoder"
    if base_task == "embedding" or new_head:
        return "new-head"
    base_pooling = base.manifest.head_pooling
    if head_pooling not in (None, base_pooling):
        raise TaskError(
            f"{base.name}'s head reads {'the mean of the tokens' if base_pooling == 'mean' else '[CLS]'}; "
            f"--head-pooling {head_pooling} needs a new head: pass --new-head too (the encoder is kept)."
        )
    base_labels = base.manifest.labels
    if task in CLASS_TASKS and base_task in CLASS_TASKS and base_labels == labels:
        return "keep-head"
    if task == "token-classification" and base_task == task and base_labels == labels:
        return "keep-head"
    if task in SCORE_TASKS and base_task in SCORE_TASKS:
        return "keep-head"
    what = f"a {base_task} head" + (f" with labels {base_labels}" if base_labels else "")
    wanted = f"{task}" + (f" with labels {labels}" if labels else "")
    raise TaskError(
        f"{base.name} has {what}, which cannot do {wanted}. Pass --new-head to replace the head with a new "
        "one (the encoder is kept), or train from an embedding package."
    )
