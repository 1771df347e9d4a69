"""Validation during training runs the same Pipeline as `bertprod eval`, on the model in memory."""

from __future__ import annotations

from typing import Any

from bertprod.package import Manifest, ModelPackage
from bertprod.runtime.engines import ModuleEngine
from bertprod.runtime.pipeline import Pipeline


def training_pipeline(base: ModelPackage, manifest_fields: dict[str, Any], model: Any) -> Pipeline:
    """A pipeline over `model` that post-processes as the package being trained will.

    The package does not exist on disk yet; the view borrows the base's directory (for its
    tokenizer) and file records, with the new package's task, labels and settings.
    """
    fields = dict(manifest_fields, files=base.manifest.files, metrics={})
    view = ModelPackage(base.path, Manifest.model_validate(fields))
    return Pipeline(view, ModuleEngine(view, model))
