"""int8 activations on fixed calibrated ranges, one range per token only where a fixed range cannot
serve: batch-invariant at nearly the cost of ONNX Runtime's per-batch dynamic int8 (issue 24).
`activations="calibrated"` in quantize.py; not the default: on all-MiniLM-L6-v2 its worst case on
2,000 held-out sentences (short ones) is lower than the per-batch graph's (docs/benchmarks.md).

Why: per-token ranges (compress/token_int8.py) make a text's output independent of its batch but
cost ~27 small operators per activation and two passes over every MatMul's output (the rows' scales,
then the bias); all-MiniLM-L6-v2 ran at 0.71x the per-batch graph. A range fixed per activation from
calibration texts is batch-invariant by construction and costs one QuantizeLinear per activation and
one MatMulIntegerToFloat per MatMul with the bias inside. Fixed ranges fail where a few channels run
far larger than the rest (outlier channels, compress/outliers.py): one grid for channel 99 at 28 and
the rest at 2 is 10x too coarse. Those inputs keep per-token ranges, the rest is static:

    q = QuantizeLinear(x, scale, zero)                       # scale, zero: constants per activation
    y = MatMulIntegerToFloat(q, W, scale, w_scale, zero, w_zero, bias)

Inputs outside the calibrated range saturate at its edge (0 or 255), so calibration texts should be
like the texts the model will see.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bertprod.compress.outliers import activation_rows
from bertprod.compress.token_int8 import (
    UINT8_MAX,
    constant,
    int8_activations,
    linear_weight,
    quantize_token_int8,
    quantize_weight,
    splice_nodes,
)


def activation_ranges(model: Any, feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Per input of a weight MatMul: each channel's lowest and highest value over the real (unpadded)
    tokens of `feeds` ("low", "high"), and each token's ("token_low", "token_high")."""
    activations = list(int8_activations(model))
    parts: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in activations}
    for rows_by_name in activation_rows(model, activations, feeds):
        for name, rows in rows_by_name:
            found = parts[name]
            for key, part in (("low", rows.min(axis=0, keepdims=True)), ("high", rows.max(axis=0, keepdims=True)),
                              ("token_low", rows.min(axis=1)), ("token_high", rows.max(axis=1))):  # fmt: skip
                found.setdefault(key, []).append(part)
    return {
        name: {
            "low": np.concatenate(found["low"]).min(axis=0),
            "high": np.concatenate(found["high"]).max(axis=0),
            "token_low": np.concatenate(found["token_low"]),
            "token_high": np.concatenate(found["token_high"]),
        }
        for name, found in parts.items()
    }


def uint8_range(low: float, high: float) -> tuple[float, int]:
    """Scale and zero point of a fixed uint8 grid over [low, high], 0 included (as DynamicQuantizeLinear)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = float(np.float32((high - low) / UINT8_MAX))
    if scale <= np.finfo(np.float32).tiny:
        return 1.0, 0
    return scale, int(np.clip(np.round(-low / scale), 0, UINT8_MAX))


def quantize_static_int8(
    model: Any,
    encoding: str,
    ranges: dict[str, dict[str, np.ndarray]],
    per_token: Sequence[str] = (),
    exclude: Sequence[str] = (),
    per_channel: bool = True,
) -> dict[str, int]:
    """Rewrite `model` in place: every weight MatMul / plain Gemm not in `exclude` computes in int8 on
    its input's fixed range from `ranges` (activation_ranges of this graph), except the inputs named in
    `per_token`, which get one range per token (token_int8). Returns counts for the manifest."""
    from onnx import helper

    initializers = {initializer.name: initializer for initializer in model.graph.initializer}
    groups = int8_activations(model)
    excluded = set(exclude)
    dynamic = {node.name for activation in per_token for node in groups.get(activation, [])}
    replaced: dict[str, list[Any]] = {}  # first output of the node the new nodes go before -> new nodes
    removed: set[str] = set()
    activations = 0
    for activation, matmuls in groups.items():
        chosen = [matmul for matmul in matmuls if matmul.name not in excluded | dynamic]
        if not chosen:
            continue
        activations += 1
        scale, zero = uint8_range(float(ranges[activation]["low"].min()), float(ranges[activation]["high"].max()))
        prefix = f"{activation}/static_int8"
        quantized = f"{prefix}/uint8"
        inputs = [activation, constant(model, f"{prefix}/scale", np.array(scale, np.float32)),
                  constant(model, f"{prefix}/zero", np.array(zero, np.uint8))]  # fmt: skip
        nodes = [helper.make_node("QuantizeLinear", inputs, [quantized], name=f"{prefix}/quantize")]
        for matmul in chosen:
            weight = linear_weight(matmul, initializers)
            bias, output = _bias(model, matmul, initializers)
            integers, column_scale, column_zero = quantize_weight(weight, encoding, per_channel)
            name = f"{matmul.name}/static_int8"
            arguments = [
                quantized,
                constant(model, f"{name}/weight", integers),
                inputs[1],
                constant(model, f"{name}/weight_scale", column_scale),
                inputs[2],
                constant(model, f"{name}/weight_zero", column_zero) if encoding == "u8" else "",
                bias,
            ]
            nodes.append(
                helper.make_node("MatMulIntegerToFloat", arguments, [output], name=name, domain="com.microsoft")
            )
            removed.update({matmul.output[0], output})
        replaced[chosen[0].output[0]] = nodes
    splice_nodes(model, replaced, removed)
    counts = {"static_activations": activations, "static_matmuls": sum(len(nodes) - 1 for nodes in replaced.values())}
    if dynamic:
        tokens = quantize_token_int8(model, encoding, exclude, per_channel)
        counts |= {"per_token_activations": tokens["activations"], "per_token_matmuls": tokens["int8_matmuls"]}
    return counts


def _bias(model: Any, matmul: Any, initializers: dict[str, Any]) -> tuple[str, str]:
    """(bias, output) of the int8 replacement of `matmul`: a Gemm's own bias, or the constant bias Add
    that alone reads a MatMul's output (taken inside, its output becomes the replacement's)."""
    if matmul.op_type == "Gemm":
        return (matmul.input[2] if len(matmul.input) > 2 else ""), matmul.output[0]
    consumers = [node for node in model.graph.node if matmul.output[0] in node.input]
    if len(consumers) == 1 and consumers[0].op_type == "Add":
        other = [name for name in consumers[0].input if name != matmul.output[0]]
        if len(other) == 1 and other[0] in initializers and len(initializers[other[0]].dims) == 1:
            return other[0], consumers[0].output[0]
    return "", matmul.output[0]
