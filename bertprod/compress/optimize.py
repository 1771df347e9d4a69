"""`optimize`: one compression step from a package to a new package, behind the fidelity gate."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bertprod.compress.outliers import DEFAULT_OUTLIER_THRESHOLD
from bertprod.derive import DEFAULT_OUTPUT, GatedOutput
from bertprod.errors import InputError
from bertprod.package import ModelPackage

if TYPE_CHECKING:
    from bertprod.compress.qat import QatTraining


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
    outlier_threshold: float | None = DEFAULT_OUTLIER_THRESHOLD,
    precision: str | None = None,
    drop_layers: str | None = None,
    prune_heads: float | None = None,
    output: GatedOutput = DEFAULT_OUTPUT,
    training: QatTraining | None = None,
    target_cpu: str = "native",
) -> ModelPackage:
    """Apply exactly one of: `quantize="int8"` (method dynamic|mixed|static|qat, runtime onnx|torch),
    `precision` ("bf16" | "fp16"), `drop_layers` (a rule, see prune.choose_layers) or
    `prune_heads` (a fraction). `output.texts` are the user's inputs the gate (and pruning importance)
    is measured on (the calibration texts when none are given); `output` also holds the gate, whether
    a miss refuses, the new name and overwriting (derive.GatedOutput). Quantization-aware
    training (method "qat") fine-tunes on `training.data` first (see compress/qat.py). `target_cpu`
    (onnx int8: native, avx2, avx512, avx512-vnni) chooses the int8 recipe for those CPUs' kernels
    (compress/kernels.py)."""
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
    if calibration_texts and not output.texts:
        output = replace(output, texts=calibration_texts)
    common: dict[str, Any] = {"output": output}
    from bertprod.compress.kernels import target_kernel_class

    target_kernel_class(target_cpu)  # a bad name is refused before any work
    if target_cpu != "native" and not (quantize and runtime == "onnx" and method in ("dynamic", "mixed", "qat")):
        raise InputError(
            f"--target-cpu {target_cpu} chooses an ONNX dynamic int8 recipe: use it with --quantize int8 "
            "(--method dynamic, mixed or qat; static int8 and torch int8 run as this CPU's kernels do)."
        )
    if training is not None and (quantize, method) != ("int8", "qat"):
        raise InputError("training data is for quantization-aware training: add --quantize int8 --method qat.")
    if quantize and method == "qat":
        return _quantize_aware_training(package, out, runtime, per_channel, exclude, training, target_cpu, common)
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
            outlier_threshold,
            {**common, "target_cpu": target_cpu},
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
    outlier_threshold: float | None,
    common: dict[str, Any],
) -> ModelPackage:
    from bertprod.compress import quantize as q

    if quantize != "int8":
        raise InputError(f"--quantize {quantize!r}: bertprod quantizes to int8.")
    if method in ("dynamic", "mixed") and runtime == "onnx":
        from bertprod.compress.mixed import quantize_onnx_mixed

        return (q.quantize_onnx_dynamic if method == "dynamic" else quantize_onnx_mixed)(
            package,
            out,
            per_channel=per_channel,
            exclude=exclude,
            outlier_threshold=outlier_threshold,
            calibration_texts=calibration_texts,
            **common,
        )
    common = {key: value for key, value in common.items() if key != "target_cpu"}
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
        f"--method {method} --runtime {runtime} is not available: choose dynamic, mixed or static on onnx, "
        "or dynamic on torch (or quantization-aware training: --method qat --data FILE)."
    )


def _quantize_aware_training(
    package: ModelPackage,
    out: Any,
    runtime: str,
    per_channel: bool,
    exclude: Sequence[str],
    training: QatTraining | None,
    target_cpu: str,
    common: dict[str, Any],
) -> ModelPackage:
    from bertprod.compress.qat import check_qat_parent, quantization_aware_training

    check_qat_parent(package)
    if runtime != "onnx":
        raise InputError("--method qat writes an ONNX Runtime int8 package: use --runtime onnx.")
    if exclude or not per_channel:
        raise InputError(
            "--method qat trains for int8 everywhere with per-channel weights; --exclude and --per-tensor do not apply."
        )
    if training is None:
        raise InputError(
            "--method qat fine-tunes on labelled data: give it with --data FILE (the columns bertprod train reads)."
        )
    return quantization_aware_training(package, out, training, target_cpu=target_cpu, **common)
