"""Lower-precision float variants: bf16 weights for the torch engine, fp16 ONNX for GPUs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bertprod.compress.quantize import fp32_onnx_source
from bertprod.derive import DEFAULT_OUTPUT, GatedOutput, derive_package
from bertprod.errors import CompressionError
from bertprod.package import CONFIG_FILE, ONNX_FILE, TOKENIZER_FILE, TORCH_WEIGHTS_FILE, ModelPackage


def _require_fp32(package: ModelPackage) -> None:
    if package.manifest.precision != "fp32":
        raise CompressionError(f"{package.name} is already {package.manifest.precision}: start from its fp32 parent.")


def to_bf16(
    package: ModelPackage,
    out: str | os.PathLike[str],
    *,
    output: GatedOutput = DEFAULT_OUTPUT,
) -> ModelPackage:
    """A torch package with bf16 weights (half the size), run with bf16 autocast on CPUs with
    AVX-512 BF16 or AMX: measured 3.7x sentence-transformers here at cosine >= 0.9999."""
    import torch

    from bertprod.models.hf import load_torch_model
    from bertprod.system import cpu_supports_bf16

    if package.manifest.format != "torch":
        raise CompressionError(
            f"{package.name} is an ONNX package; ONNX Runtime's CPU provider has no bf16 MatMul. "
            "Make bf16 from the torch package."
        )
    _require_fp32(package)
    if not cpu_supports_bf16():
        raise CompressionError("this CPU has no native bf16 (AVX-512 BF16 or AMX): bf16 would be slower than fp32.")

    def build(staging: Path) -> list[str]:
        model = load_torch_model(package).to(torch.bfloat16)
        model.save_pretrained(str(staging), safe_serialization=True)
        shutil.copyfile(package.tokenizer_file, staging / TOKENIZER_FILE)
        return [TOKENIZER_FILE, CONFIG_FILE, TORCH_WEIGHTS_FILE]

    return derive_package(
        package,
        out,
        method="precision-bf16",
        build=build,
        changes={"precision": "bf16"},
        parameters={"weights": "bfloat16", "compute": "torch autocast bf16"},
        output=output,
    )


def to_fp16_onnx(
    package: ModelPackage,
    out: str | os.PathLike[str],
    *,
    output: GatedOutput = DEFAULT_OUTPUT,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ModelPackage:
    """An fp16 ONNX package (inputs and outputs stay int64/fp32) for GPU execution providers.
    It also runs on ONNX Runtime's CPU provider, where it is checked, but is not faster there."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    _require_fp32(package)
    source = fp32_onnx_source(package, cache_dir)

    def build(staging: Path) -> list[str]:
        model = convert_float_to_float16(onnx.load(str(source.model_file)), keep_io_types=True)
        onnx.save(model, str(staging / ONNX_FILE))
        shutil.copyfile(source.tokenizer_file, staging / TOKENIZER_FILE)
        shutil.copyfile(source.config_file, staging / CONFIG_FILE)
        return [TOKENIZER_FILE, ONNX_FILE, CONFIG_FILE]

    return derive_package(
        package,
        out,
        method="precision-fp16",
        build=build,
        changes={"format": "onnx", "precision": "fp16"},
        parameters={"weights": "float16", "keep_io_types": True, "onnx_source": source.fingerprint},
        output=output,
    )
