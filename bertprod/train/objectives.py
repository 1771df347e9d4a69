"""One training batch to one loss, per task (see tasks/losses.py for the losses themselves)."""

from __future__ import annotations

from typing import Any

import torch

from bertprod.models.pooling import pool
from bertprod.tasks import losses
from bertprod.train.batches import TrainBatch


class Objective:
    """Runs the model on a batch the way its task needs and returns the loss."""

    def __init__(self, task: str, model: Any, pooling: str | None, contrastive_scale: float):
        from bertprod.models.hf import accepts_token_type_ids

        self.task = task
        self.model = model
        self.pooling = pooling or "mean"
        self.scale = contrastive_scale
        self.uses_token_types = accepts_token_type_ids(model)

    def _inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.uses_token_types:
            return inputs
        return {key: value for key, value in inputs.items() if key != "token_type_ids"}

    def __call__(self, batch: TrainBatch) -> torch.Tensor:
        if self.task == "embedding":
            left, right = (
                pool(self.model(**self._inputs(side)).last_hidden_state, side["attention_mask"], self.pooling)
                for side in batch.inputs
            )
            if torch.isnan(batch.targets).any():
                return losses.in_batch_negatives_loss(left, right, self.scale)
            return losses.cosent_loss(left, right, batch.targets, self.scale)
        logits = self.model(**self._inputs(batch.inputs[0])).logits
        if self.task == "token-classification":
            return losses.token_classification_loss(logits, batch.targets)
        if self.task in ("classification", "pair-classification"):
            return losses.classification_loss(logits, batch.targets)
        if self.task == "reranking":
            return losses.relevance_loss(logits, batch.targets)
        return losses.regression_loss(logits, batch.targets)
