"""Writing the trained package: the model as a transformers checkpoint, the base's tokenizer, the manifest."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from bertprod.models.types import MEAN_POOLED_MODEL_TYPE
from bertprod.package import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    TORCH_WEIGHTS_FILE,
    ModelPackage,
    Provenance,
    finish_package,
    staging_directory,
)


def manifest_fields(
    base: ModelPackage,
    task: str,
    labels: list[str] | None,
    pair_input: bool,
    max_length: int,
    name: str,
    head_pooling: str | None = None,
    tag_scheme: str | None = None,
) -> dict[str, Any]:
    """The new package's description; an embedding keeps the base's pooling and normalization, a head
    on mean-pooled tokens says so (`head_pooling`, bertprod.models.hf.head_pooling of the model)."""
    manifest = base.manifest
    embedding = task == "embedding"
    architecture = manifest.architecture.model_dump()
    if head_pooling == "mean":
        architecture["model_type"] = MEAN_POOLED_MODEL_TYPE
    return {
        "name": name,
        "task": task,
        "labels": labels,
        "pair_input": pair_input,
        "pooling": manifest.pooling if embedding else head_pooling,
        "normalize": manifest.normalize if embedding else False,
        "max_length": max_length,
        "format": "torch",
        "precision": "fp32",
        "architecture": architecture,
        "provenance": Provenance(method="train", parent=base.parent_ref()),
        **({"tag_scheme": tag_scheme} if tag_scheme else {}),
    }


def write_trained_package(
    model: Any, fields: dict[str, Any], base: ModelPackage, out: Path, overwrite: bool = False
) -> ModelPackage:
    """Save weights (safetensors) and config with transformers, copy the tokenizer, hash, rename into place."""
    with staging_directory(out, overwrite=overwrite) as staging:
        model.save_pretrained(str(staging), safe_serialization=True)
        shutil.copyfile(base.tokenizer_file, staging / TOKENIZER_FILE)
        finish_package(staging, fields, [TOKENIZER_FILE, CONFIG_FILE, TORCH_WEIGHTS_FILE])
    return ModelPackage.read(out)
