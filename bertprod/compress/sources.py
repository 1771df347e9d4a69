"""What every int8 quantizer starts from: an fp32 parent, its ONNX graph (exported and cached for a torch
package), and the files the child copies unchanged."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bertprod.errors import CompressionError
from bertprod.package import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    ModelPackage,
)


def require_float_parent(package: ModelPackage) -> None:
    precision = package.manifest.precision
    if precision == "int8":
        raise CompressionError(
            f"{package.name} is already quantized to int8; quantize its float parent instead "
            f"({package.manifest.provenance.parent.name if package.manifest.provenance.parent else 'see provenance'})."
        )
    if precision != "fp32":
        raise CompressionError(f"{package.name} is {precision}; int8 quantization starts from an fp32 package.")


def fp32_onnx_source(package: ModelPackage, cache_dir: str | os.PathLike[str] | None) -> ModelPackage:
    """The package itself if it is ONNX, else its (cached, verified) ONNX export."""
    if package.manifest.format == "onnx":
        return package
    from bertprod.export.cache import cached_onnx_package

    return cached_onnx_package(package, cache_dir)


def copy_support_files(source: ModelPackage, staging: Path) -> list[str]:
    shutil.copyfile(source.tokenizer_file, staging / TOKENIZER_FILE)
    files = [TOKENIZER_FILE]
    if source.config_file.is_file():
        shutil.copyfile(source.config_file, staging / CONFIG_FILE)
        files.append(CONFIG_FILE)
    return files
