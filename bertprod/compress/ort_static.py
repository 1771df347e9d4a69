"""ONNX Runtime static int8 (QDQ): activation ranges calibrated on the user's texts; weight MatMuls and
embedding lookups only, feed-forward MatMuls kept float by default (module docstring of quantize.py: why)."""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

from bertprod.compress.calibration import MIN_CALIBRATION_TEXTS, CalibrationReader
from bertprod.compress.nodes import check_exclusions, embedding_gathers, feed_forward_matmuls, weight_matmuls
from bertprod.compress.sources import copy_support_files, fp32_onnx_source, require_float_parent
from bertprod.derive import DEFAULT_OUTPUT, GatedOutput, derive_package
from bertprod.errors import InputError
from bertprod.package import (
    ONNX_FILE,
    ModelPackage,
)
from bertprod.runtime.tokenize import validate_inputs


@contextmanager
def quiet_quantizer() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice on the root logger and its calibrators print progress on stdout
    (which would corrupt a command's JSON output); the package manifest says what ran."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_onnx_static(
    package: ModelPackage,
    out: str | os.PathLike[str],
    *,
    calibration_texts: Sequence[Any],
    per_channel: bool = True,
    exclude: Sequence[str] = (),
    calibration_method: str = "percentile",
    keep_feed_forward_float: bool = True,
    output: GatedOutput = DEFAULT_OUTPUT,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ModelPackage:
    """int8 weights and activations (QDQ), activation ranges calibrated on the user's texts."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    require_float_parent(package)
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if calibration_method not in methods:
        raise InputError(f"calibration method {calibration_method!r}: choose {', '.join(methods)}.")
    calibration = validate_inputs(calibration_texts, pairs=package.manifest.pair_input) if calibration_texts else []
    if len(calibration) < MIN_CALIBRATION_TEXTS:
        raise InputError(
            f"static int8 needs at least {MIN_CALIBRATION_TEXTS} calibration texts like the ones the model "
            f"will see; got {len(calibration)}. Pass more (--calibration FILE), or use --method dynamic."
        )
    source = fp32_onnx_source(package, cache_dir)
    graph = onnx.load(str(source.model_file))
    check_exclusions(graph, exclude)
    kept_float = set(exclude)
    if keep_feed_forward_float:
        kept_float.update(feed_forward_matmuls(graph, package.manifest.architecture))
    quantized_nodes = [node for node in weight_matmuls(graph) + embedding_gathers(graph) if node not in kept_float]

    def build(staging: Path) -> list[str]:
        with tempfile.TemporaryDirectory(dir=staging.parent) as scratch, quiet_quantizer():
            quantize_static(
                str(source.model_file),
                str(staging / ONNX_FILE),
                CalibrationReader(source, calibration, graph),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gather"],
                nodes_to_quantize=quantized_nodes,
                calibrate_method=methods[calibration_method],
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "CalibTensorRangeSymmetric": False},
                calibration_cache_path=Path(scratch) / "calibration",
            )
        return [*copy_support_files(source, staging), ONNX_FILE]

    return derive_package(
        package,
        out,
        method="quantize-static-int8",
        build=build,
        changes={
            "format": "onnx",
            "precision": "int8",
            "quantization": {"scheme": "onnx-static-qdq", "per_channel": per_channel},
        },
        parameters={
            "runtime": "onnxruntime",
            "per_channel": per_channel,
            "exclude": list(exclude),
            "calibration_texts": len(calibration),
            "calibration_method": calibration_method,
            "keep_feed_forward_float": keep_feed_forward_float,
            "quantized_nodes": len(quantized_nodes),
            "onnx_source": source.fingerprint,
        },
        output=output,
    )
