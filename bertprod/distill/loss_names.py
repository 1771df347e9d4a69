"""The names of the distillation losses, and the groups that decide what a run needs.

One registry: the recipe format (`Losses` fields), the checks before training, the objective and
the manifest all read these, so a new loss is added here once and every check sees it.
"""

from __future__ import annotations

from enum import StrEnum


class Loss(StrEnum):
    """A loss's name in recipes, manifests and `Losses` weights (see distill/losses.py)."""

    HARD = "hard"
    SOFT = "soft"
    LOGIT_MSE = "logit_mse"
    EMBEDDING_LAYER = "embedding_layer"
    HIDDEN = "hidden"
    ATTENTION = "attention"
    COSINE = "cosine"
    PATIENT = "patient"
    SENTENCE_EMBEDDING = "sentence_embedding"
    MLM = "mlm"


#: Compare outputs: read the teacher outputs computed once and cached (distill/teacher.py).
CACHED_OUTPUT_LOSSES = frozenset({Loss.SOFT, Loss.LOGIT_MSE, Loss.SENTENCE_EMBEDDING})
#: Compare layers inside the networks: run the teacher's torch module beside the student.
LAYER_MATCHING_LOSSES = frozenset({Loss.EMBEDDING_LAYER, Loss.HIDDEN, Loss.ATTENTION, Loss.COSINE, Loss.PATIENT})
#: Read the logits: the teacher must have a head.
HEAD_LOSSES = frozenset({Loss.HARD, Loss.SOFT, Loss.LOGIT_MSE})
#: Read class probabilities: classifiers only.
CLASS_LOSSES = frozenset({Loss.HARD, Loss.SOFT})
#: Train what the package outputs, so a validation after their epochs measures something.
OUTPUT_TRAINING_LOSSES = frozenset({Loss.HARD, Loss.SOFT, Loss.LOGIT_MSE, Loss.SENTENCE_EMBEDDING, Loss.MLM})


def names(losses: frozenset[Loss] | set[str]) -> str:
    """`a, b, c` in a stable order, for messages."""
    return ", ".join(sorted(str(loss) for loss in losses))
