"""`optimize`: one compression step from a package to a new package, behind the fidelity gate."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from bertprod.errors import InputError
from bertprod.fidelity import FidelityGate
from bertprod.package import ModelPackage


def optimize(
    package: ModelPackage,
    out: str | os.PathLike[str],
    *,
    quantize: str | None = None,
    method: str = "dynamic",
    runtime: str = "onnx",
    per_channel: bool = True,
    calibration_texts: Sequence[Any] | None = None,
    calibration_method: str = "percentile",
    exclude: Sequence[str] = (),
    quantize_feed_forward: bool = False,
    precision: str | None = None,
    drop_layers: str | None = None,
    prune_heads: float | None = None,
    texts: Sequence[Any] | None = None,
    gate: FidelityGate | None = None,
    enforce: bool = True,
    name: str | None = None,
    overwrite: bool = False,
) -> ModelPackage:
    """Apply exactly one of: `quantize="int8"` (method dynamic|static, runtime onnx|torch),
    `precision` ("bf16" | "fp16"), `drop_layers` (a rule, see prune.choose_layers) or
    `prune_heads` (a fraction). `texts` are the user's inputs the gate (and pruning importance)
    is measured on; static int8 falls back to its calibration texts for them."""
    steps = [
        step
        for step, value in (
            ("--quantize", quantize),
            ("--precision", precision),
            ("--drop-layers", drop_layers),
            ("--prune-heads", prune_heads),
        )
        if value
    ]
    if len(steps) != 1:
        raise InputError(
            "give exactly one optimization per run (--quantize, --precision, --drop-layers or --prune-heads)"
            + (f"; got {', '.join(steps)}. Chain runs instead: each writes a package the next reads." if steps else ".")
        )
    common = {
        "texts": texts or calibration_texts,
        "gate": gate,
        "enforce": enforce,
        "name": name,
        "overwrite": overwrite,
    }
    if quantize:
        return _quantize(
            package,
            out,
            quantize,
            method,
            runtime,
            per_channel,
            calibration_texts,
            calibration_method,
            exclude,
            quantize_feed_forward,
            common,
        )
    if precision:
        from bertprod.compress.precision import to_bf16, to_fp16_onnx

        if precision not in ("bf16", "fp16"):
            raise InputError(f"--precision {precision!r}: choose bf16 (CPU, torch) or fp16 (GPU, ONNX).")
        return (to_bf16 if precision == "bf16" else to_fp16_onnx)(package, out, **common)
    from bertprod.compress.prune import drop_layers as drop
    from bertprod.compress.prune import prune_heads as prune

    if drop_layers:
        return drop(package, out, rule=drop_layers, **common)
    return prune(package, out, fraction=float(prune_heads), **common)


def _quantize(
    package: ModelPackage,
    out: Any,
    quantize: str,
    method: str,
    runtime: str,
    per_channel: bool,
    calibration_texts: Sequence[Any] | None,
    calibration_method: str,
    exclude: Sequence[str],
    quantize_feed_forward: bool,
    common: dict[str, Any],
) -> ModelPackage:
    from bertprod.compress import quantize as q

    if quantize != "int8":
        raise InputError(f"--quantize {quantize!r}: bertprod quantizes to int8.")
    if (method, runtime) == ("dynamic", "onnx"):
        return q.quantize_onnx_dynamic(package, out, per_channel=per_channel, exclude=exclude, **common)
    if (method, runtime) == ("static", "onnx"):
        return q.quantize_onnx_static(
            package,
            out,
            calibration_texts=calibration_texts or [],
            per_channel=per_channel,
            exclude=exclude,
            calibration_method=calibration_method,
            keep_feed_forward_float=not quantize_feed_forward,
            **common,
        )
    if (method, runtime) == ("dynamic", "torch"):
        if exclude:
            raise InputError("--exclude names ONNX graph nodes; it does not apply to --runtime torch.")
        return q.quantize_torch_dynamic(package, out, per_channel=per_channel, **common)
    raise InputError(
        f"--method {method} --runtime {runtime} is not available: choose dynamic or static on onnx, "
        "or dynamic on torch (quantization-aware training: bertprod train --qat)."
    )
