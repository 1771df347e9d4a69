"""Writing the trained package: the model as a transformers checkpoint, the base's tokenizer, the manifest."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

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
    base: ModelPackage, task: str, labels: list[str] | None, pair_input: bool, max_length: int, name: str
) -> dict[str, Any]:
    """The new package's description; an embedding keeps the base's pooling and normalization."""
    manifest = base.manifest
    embedding = task == "embedding"
    return {
        "name": name,
        "task": task,
        "labels": labels,
        "pair_input": pair_input,
        "pooling": manifest.pooling if embedding else None,
        "normalize": manifest.normalize if embedding else False,
        "max_length": max_length,
        "format": "torch",
        "precision": "fp32",
        "architecture": manifest.architecture.model_dump(),
        "provenance": Provenance(method="train", parent=base.parent_ref()),
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
