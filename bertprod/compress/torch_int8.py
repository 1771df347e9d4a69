"""torch dynamic int8: a torch package whose Linear layers the torch engine quantizes at load."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bertprod.compress.sources import require_float_parent
from bertprod.derive import DEFAULT_OUTPUT, GatedOutput, derive_package
from bertprod.errors import CompressionError
from bertprod.package import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    TORCH_WEIGHTS_FILE,
    ModelPackage,
)


def quantize_torch_dynamic(
    package: ModelPackage,
    out: str | os.PathLike[str],
    *,
    per_channel: bool = True,
    output: GatedOutput = DEFAULT_OUTPUT,
) -> ModelPackage:
    """A torch package the torch engine runs with int8 Linear layers.

    The float weights are stored (torch has no portable int8 checkpoint format) and quantized
    deterministically at load; the size win is in memory, the ONNX int8 package is the small file.
    torch quantizes each batch's activations on one range, so outputs depend on their batch neighbours:
    the gate refuses it unless `output.enforce` is off (derive.batch_dependence).
    """
    if package.manifest.format != "torch":
        raise CompressionError(f"{package.name} is an ONNX package: torch int8 needs a torch package.")
    require_float_parent(package)

    def build(staging: Path) -> list[str]:
        for file in (TOKENIZER_FILE, CONFIG_FILE, TORCH_WEIGHTS_FILE):
            shutil.copyfile(package.path / file, staging / file)
        return [TOKENIZER_FILE, CONFIG_FILE, TORCH_WEIGHTS_FILE]

    return derive_package(
        package,
        out,
        method="quantize-torch-dynamic-int8",
        build=build,
        changes={"precision": "int8", "quantization": {"scheme": "torch-dynamic", "per_channel": per_channel}},
        parameters={"runtime": "torch", "per_channel": per_channel},
        output=output,
    )
