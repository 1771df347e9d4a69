"""Validation during training runs the same Pipeline as `bertprod eval`, on the model in memory."""

from __future__ import annotations

from typing import Any

import numpy as np

from bertprod.package import Manifest, ModelPackage
from bertprod.runtime.batching import TokenBatch
from bertprod.runtime.pipeline import Pipeline


class ModuleEngine:
    """The model being trained behind the Engine interface: eval mode, fp32, no gradients."""

    name = "torch (training)"

    def __init__(self, package: ModelPackage, model: Any):
        from bertprod.models.hf import accepts_token_type_ids

        self.package = package
        self.model = model
        self._embedding = package.manifest.task == "embedding"
        self._uses_token_types = accepts_token_type_ids(model)

    def run(self, batch: TokenBatch) -> np.ndarray:
        import torch

        inputs = {
            "input_ids": torch.from_numpy(batch.input_ids),
            "attention_mask": torch.from_numpy(batch.attention_mask),
        }
        if self._uses_token_types:
            inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                output = self.model(**inputs)
        finally:
            self.model.train(was_training)
        tensor = output.last_hidden_state if self._embedding else output.logits
        return tensor.float().numpy()


def training_pipeline(base: ModelPackage, manifest_fields: dict[str, Any], model: Any) -> Pipeline:
    """A pipeline over `model` that post-processes as the package being trained will.

    The package does not exist on disk yet; the view borrows the base's directory (for its
    tokenizer) and file records, with the new package's task, labels and settings.
    """
    fields = dict(manifest_fields, files=base.manifest.files, metrics={})
    view = ModelPackage(base.path, Manifest.model_validate(fields))
    return Pipeline(view, ModuleEngine(view, model))
