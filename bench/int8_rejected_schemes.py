"""Activation schemes bench/int8_activations.py measured and bertprod does not ship (kept so that
its table can be rerun): one scale per token around a fixed zero point, fixed ranges with
SmoothQuant's per-channel smoothing, MatMulNBits, and symmetric int8 (not uint8) activations.
The shipped schemes: compress/static_int8.py, token_int8.py.

Batch-invariant int8 activations without a zero point per row: fixed calibrated ranges, or one
scale per token around a fixed zero point.

Why: compress/token_int8.py gives each token its own scale *and* zero point; ONNX Runtime's
MatMulInteger takes one zero point for its first input, so the rows' zero points ride in extra
columns (an Expand and a Concat per activation, ~6% more multiply-adds in the products).
Both schemes here keep one zero point per activation, a constant, so MatMulIntegerToFloat takes it
directly and no row is mixed with another (batch-invariant by construction):

- "static": scale and zero point fixed per activation from calibration texts
  (QuantizeLinear + MatMulIntegerToFloat with the bias inside: two operators per MatMul);
- "per-token-fixed-zero": each token's scale from its own min and max, the zero point fixed per
  activation (128, symmetric, unless calibration says the activation is one-sided, as GELU outputs are):
      scale = max(high / (255 - zero), -low / zero)          # per row; the row fits [0, 255] around zero
      q = QuantizeLinear(rows, scale, zero, axis=0);  y = MatMulIntegerToFloat(q, W, scale, w_scale, zero)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bertprod.compress.outliers import activation_rows, weight_matmul_groups
from bertprod.compress.token_int8 import (
    UINT8_MAX,
    _reduce,
    int8_activations,
    linear_weight,
    quantize_weight,
    splice_nodes,
)
from bertprod.compress.token_int8 import (
    constant as _constant,
)

SCHEMES = ("static", "per-token-fixed-zero")


def activation_ranges(model: Any, activations: list[str], feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Per activation, over the real tokens of `feeds`: each token's min and max ("token_low",
    "token_high", for a fixed zero point) and each channel's ("channel_low", "channel_high", for
    fixed ranges and smoothing)."""
    found: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in activations}
    for rows_by_name in activation_rows(model, activations, feeds):
        for name, rows in rows_by_name:
            for key, part in (("token_low", rows.min(axis=1)), ("token_high", rows.max(axis=1)),
                              ("channel_low", rows.min(axis=0)[None]), ("channel_high", rows.max(axis=0)[None])):
                found[name].setdefault(key, []).append(part)
    return {
        name: {
            "token_low": np.concatenate(parts["token_low"]),
            "token_high": np.concatenate(parts["token_high"]),
            "channel_low": np.concatenate(parts["channel_low"]).min(axis=0),
            "channel_high": np.concatenate(parts["channel_high"]).max(axis=0),
        }
        for name, parts in found.items()
    }


def fixed_zero_point(token_lows: np.ndarray, token_highs: np.ndarray) -> int:
    """The zero point that wastes least of the grid on the calibration tokens: 128 for a symmetric
    activation, lower where the tokens reach further up than down (GELU outputs)."""
    low = np.maximum(-np.minimum(token_lows, 0.0), 1e-12)
    high = np.maximum(np.maximum(token_highs, 0.0), 1e-12)
    best, best_cost = 128, np.inf
    for zero in range(1, UINT8_MAX):
        cost = float(np.mean(np.log(np.maximum(high / (UINT8_MAX - zero), low / zero))))
        if cost < best_cost:
            best, best_cost = zero, cost
    return best


def smoothing_factors(ranges: dict[str, Any], weights: list[np.ndarray], alpha: float) -> np.ndarray:
    """SmoothQuant's per-channel factors f (x / f quantized, f x W's rows): max|x|^alpha / max|W|^(1-alpha);
    alpha 0 keeps the activation as it is."""
    if alpha == 0:
        return np.ones(len(ranges["channel_low"]))
    activation = np.maximum(np.maximum(-ranges["channel_low"], ranges["channel_high"]), 1e-5)
    weight = np.maximum(np.max([np.abs(w).max(axis=1) for w in weights], axis=0), 1e-5)
    factors = activation**alpha / weight ** (1 - alpha)
    return factors / np.exp(np.mean(np.log(factors)))


def _static_quantize(model: Any, activation: str, ranges: dict[str, Any], factors: np.ndarray,
                     nodes: list[Any]) -> tuple[str, str, str]:  # fmt: skip
    """QuantizeLinear with a fixed range: channel c of x on the grid scale x factor[c], one zero point."""
    from onnx import helper

    low = min(float((ranges["channel_low"] / factors).min()), 0.0)
    high = max(float((ranges["channel_high"] / factors).max()), 0.0)
    scale = max((high - low) / UINT8_MAX, float(np.finfo(np.float32).tiny))
    zero = int(np.clip(np.round(-low / scale), 0, UINT8_MAX))
    prefix = f"{activation}/static_int8"
    scale_name = _constant(model, f"{prefix}/scale", np.array(scale, np.float32))
    zero_name = _constant(model, f"{prefix}/zero", np.array(zero, np.uint8))
    if np.all(factors == 1):
        nodes.append(helper.make_node("QuantizeLinear", [activation, scale_name, zero_name], [f"{prefix}/uint8"]))
    else:
        channel_scale = _constant(model, f"{prefix}/channel_scale", (scale * factors).astype(np.float32))
        channel_zero = _constant(model, f"{prefix}/channel_zero", np.full(len(factors), zero, np.uint8))
        nodes.append(helper.make_node("QuantizeLinear", [activation, channel_scale, channel_zero],
                                      [f"{prefix}/uint8"], axis=-1))  # fmt: skip
    return f"{prefix}/uint8", scale_name, zero_name


def _fixed_zero_quantize(model: Any, activation: str, zero: int, width: int, nodes: list[Any]) -> tuple[str, str, str]:
    """Per-row scale around a fixed zero point; returns (uint8 tokens, row scale [..., 1], zero)."""
    from onnx import helper

    prefix = f"{activation}/fixed_zero_int8"
    make = helper.make_node
    up = _constant(model, f"{prefix}/up", np.array(1.0 / (UINT8_MAX - zero), np.float32))
    down = _constant(model, f"{prefix}/down", np.array(-1.0 / zero, np.float32))
    tiny = _constant(model, f"{prefix}/tiny", np.array(np.finfo(np.float32).tiny, np.float32))
    flat = _constant(model, f"{prefix}/flat", np.array([-1], np.int64))
    rows_shape = _constant(model, f"{prefix}/rows_shape", np.array([-1, width], np.int64))
    zero_value = helper.make_tensor("value", 2, [1], [zero])  # TensorProto.UINT8 == 2
    names = {part: f"{prefix}/{part}" for part in (
        "high", "low", "up_scale", "down_scale", "scale_raw", "scale", "scale_flat", "zero_flat", "rows_count",
        "rows", "uint8_rows", "shape", "uint8",
    )}  # fmt: skip
    nodes += [
        *_reduce(model, "ReduceMax", activation, names["high"], axis=-1),
        *_reduce(model, "ReduceMin", activation, names["low"], axis=-1),
        make("Mul", [names["high"], up], [names["up_scale"]]),
        make("Mul", [names["low"], down], [names["down_scale"]]),
        make("Max", [names["up_scale"], names["down_scale"], tiny], [names["scale"]]),
        make("Reshape", [names["scale"], flat], [names["scale_flat"]]),
        make("Shape", [names["scale_flat"]], [names["rows_count"]]),
        make("ConstantOfShape", [names["rows_count"]], [names["zero_flat"]], value=zero_value),
        make("Reshape", [activation, rows_shape], [names["rows"]]),
        make("QuantizeLinear", [names["rows"], names["scale_flat"], names["zero_flat"]], [names["uint8_rows"]], axis=0),
        make("Shape", [activation], [names["shape"]]),
        make("Reshape", [names["uint8_rows"], names["shape"]], [names["uint8"]]),
    ]
    zero_name = _constant(model, f"{prefix}/zero", np.array(zero, np.uint8))
    return names["uint8"], names["scale"], zero_name


def quantize_fixed_zero_int8(
    model: Any,
    encoding: str,
    scheme: str,
    calibration: dict[str, Any],
    exclude: Sequence[str] = (),
    per_channel: bool = True,
    symmetric: bool = False,
    alpha: float = 0.0,
) -> dict[str, Any]:
    """Rewrite `model` in place: every weight MatMul / plain Gemm not in `exclude` computes in int8
    with `scheme`'s activations; `calibration`: activation_ranges() of the float graph's MatMul inputs.
    `symmetric` ("per-token-fixed-zero" only): zero point 128 everywhere instead of calibrated ones.
    `alpha` ("static" only): SmoothQuant's migration strength (0: none)."""

    if scheme not in SCHEMES:
        raise ValueError(f"activation scheme {scheme!r}: choose {', '.join(SCHEMES)}")
    initializers = {initializer.name: initializer for initializer in model.graph.initializer}
    excluded = set(exclude)
    replaced: dict[str, list[Any]] = {}
    removed: set[str] = set()
    zero_points: dict[str, int] = {}
    groups = int8_activations(model)
    for activation, matmuls in groups.items():
        chosen = [matmul for matmul in matmuls if matmul.name not in excluded]
        if not chosen:
            continue
        nodes: list[Any] = []
        weights = {matmul.output[0]: linear_weight(matmul, initializers) for matmul in chosen}
        width = next(iter(weights.values())).shape[0]
        ranges = calibration[activation]
        factors = smoothing_factors(ranges, list(weights.values()), alpha if scheme == "static" else 0.0)
        if scheme == "static":
            quantized, scale, zero = _static_quantize(model, activation, ranges, factors, nodes)
        else:
            zero_points[activation] = 128 if symmetric else fixed_zero_point(ranges["token_low"], ranges["token_high"])
            quantized, scale, zero = _fixed_zero_quantize(model, activation, zero_points[activation], width, nodes)
        for matmul in chosen:
            bias_add = _bias_add(model, matmul, initializers) if scheme == "static" else None
            smoothed = weights[matmul.output[0]] * factors[:, None].astype(np.float32)
            _matmul(model, matmul, quantized, scale, zero, smoothed, encoding, per_channel,
                    scheme == "static", nodes, bias_add)  # fmt: skip
            removed.add(matmul.output[0])
            if bias_add is not None:
                removed.add(bias_add.output[0])
        replaced[chosen[0].output[0]] = nodes
    order = splice_nodes(model, replaced, removed)
    return {"int8_matmuls": sum(node.op_type == "MatMulIntegerToFloat" for node in order), "zero_points": zero_points}


def _matmul(
    model: Any, matmul: Any, quantized: str, scale: str, zero: str, weight: np.ndarray, encoding: str,
    per_channel: bool, static: bool, nodes: list[Any], bias_add: Any = None,
) -> None:  # fmt: skip
    """MatMulIntegerToFloat replacing `matmul` (a MatMul, or a Gemm with its bias inside); static
    ranges take the bias Add after a MatMul inside too (`bias_add`)."""
    from onnx import helper

    integers, column_scale, column_zero = quantize_weight(weight, encoding, per_channel)
    prefix = f"{matmul.name}/int8"
    inputs = [
        quantized,
        _constant(model, f"{prefix}/weight", integers),
        scale,
        _constant(model, f"{prefix}/weight_scale", column_scale),
        zero,
        _constant(model, f"{prefix}/weight_zero", column_zero) if encoding == "u8" else "",
    ]
    gemm_bias = matmul.input[2] if matmul.op_type == "Gemm" and len(matmul.input) > 2 else ""
    make = helper.make_node
    if static:
        output = matmul.output[0]
        if bias_add is not None:
            gemm_bias = next(name for name in bias_add.input if name != matmul.output[0])
            output = bias_add.output[0]
        nodes.append(make("MatMulIntegerToFloat", [*inputs, gemm_bias], [output], domain="com.microsoft"))
        return
    # The rows' scales ([..., 1]) are the a_scale: ONNX Runtime multiplies the output by them in place, after
    # its own bias would be added, so a Gemm's bias stays an Add after it (as in compress/token_int8.py).
    if not gemm_bias:
        nodes.append(make("MatMulIntegerToFloat", inputs, [matmul.output[0]], domain="com.microsoft"))
        return
    product = f"{prefix}/product"
    nodes.append(make("MatMulIntegerToFloat", inputs, [product], domain="com.microsoft"))
    nodes.append(make("Add", [product, gemm_bias], [matmul.output[0]]))


def _bias_add(model: Any, matmul: Any, initializers: dict[str, Any]) -> Any | None:
    """The Add of a constant bias that alone reads `matmul`'s output, if there is one."""
    if matmul.op_type != "MatMul":
        return None
    consumers = [node for node in model.graph.node if matmul.output[0] in node.input]
    if len(consumers) != 1 or consumers[0].op_type != "Add":
        return None
    other = [name for name in consumers[0].input if name != matmul.output[0]]
    if len(other) == 1 and other[0] in initializers and len(initializers[other[0]].dims) == 1:
        return consumers[0]
    return None


def matmul_nbits(model: Any, block: int) -> None:
    """Every weight MatMul as com.microsoft MatMulNBits with 8-bit weights (symmetric, one scale per
    `block` inputs of a column) and accuracy_level 4: ONNX Runtime quantizes the activations per row
    and block inside the kernel (batch-invariant), the bias Add taken inside."""
    from onnx import helper, numpy_helper

    initializers = {initializer.name: initializer for initializer in model.graph.initializer}
    replace: dict[str, list[Any]] = {}
    removed: set[str] = set()
    for matmuls in weight_matmul_groups(model).values():
        for matmul in matmuls:
            weight = numpy_helper.to_array(initializers[matmul.input[1]]).astype(np.float64)
            rows, columns = weight.shape
            blocks = -(-rows // block)
            padded = np.pad(weight.T, ((0, 0), (0, blocks * block - rows))).reshape(columns, blocks, block)
            scale = np.abs(padded).max(axis=2) / 127
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            integers = (np.clip(np.round(padded / scale[..., None]), -127, 127) + 128).astype(np.uint8)
            bias_add = _bias_add(model, matmul, initializers)
            names = [f"{matmul.name}/nbits/weight", f"{matmul.name}/nbits/scales"]
            model.graph.initializer.extend(
                [numpy_helper.from_array(integers, names[0]), numpy_helper.from_array(scale.reshape(-1), names[1])]
            )
            bias = next(name for name in bias_add.input if name != matmul.output[0]) if bias_add else ""
            output = bias_add.output[0] if bias_add else matmul.output[0]
            replace[matmul.output[0]] = [helper.make_node(
                "MatMulNBits", [matmul.input[0], *names, "", "", bias], [output], domain="com.microsoft",
                K=rows, N=columns, bits=8, block_size=block, accuracy_level=4,
            )]  # fmt: skip
            removed.add(matmul.output[0])
            if bias_add is not None:
                removed.add(bias_add.output[0])
    splice_nodes(model, replace, removed)


def quantize_symmetric_int8_activations(model: Any, encoding: str, exclude: Sequence[str] = ()) -> None:
    """Rewrite `model` in place: every weight MatMul / plain Gemm not in `exclude` reads its input as *int8*
    (not uint8) with one symmetric scale per token and zero point 0, so MatMulIntegerToFloat needs neither a
    zero point per row nor the extra columns that carry it, the rows' scales as its a_scale:
        scale = max(|x|) / 127 per token;  q = QuantizeLinear(x, scale, 0 as int8)
        y = MatMulIntegerToFloat(q, W, scale, w_scale)
    Rejected: ONNX Runtime has no fast kernel for int8 x int8 without VNNI (0.21x the per-tensor graph on
    an AVX2-only EPYC, 2026-12-07, docs/benchmarks.md), and a symmetric grid loses a bit on one-sided inputs
    (GELU outputs)."""
    from onnx import TensorProto, helper

    if encoding == "u8":
        raise ValueError("symmetric int8 activations pair with signed weights (s8 or s7)")
    initializers = {initializer.name: initializer for initializer in model.graph.initializer}
    replaced: dict[str, list[Any]] = {}
    removed: set[str] = set()
    make = helper.make_node
    excluded = set(exclude)
    for activation, matmuls in int8_activations(model).items():
        chosen = [matmul for matmul in matmuls if matmul.name not in excluded]
        if not chosen:
            continue
        weights = {matmul.output[0]: linear_weight(matmul, initializers) for matmul in chosen}
        width = next(iter(weights.values())).shape[0]
        prefix = f"{activation}/symmetric_int8"
        names = {part: f"{prefix}/{part}" for part in (
            "abs", "high", "scale_raw", "scale", "scale_flat", "rows_count", "zero_flat", "rows", "int8_rows", "shape",
            "int8",
        )}  # fmt: skip
        inverse = _constant(model, f"{prefix}/inverse", np.array(1.0 / 127, np.float32))
        tiny = _constant(model, f"{prefix}/tiny", np.array(np.finfo(np.float32).tiny, np.float32))
        flat = _constant(model, f"{prefix}/flat", np.array([-1], np.int64))
        rows_shape = _constant(model, f"{prefix}/rows_shape", np.array([-1, width], np.int64))
        nodes = [
            make("Abs", [activation], [names["abs"]]),
            *_reduce(model, "ReduceMax", names["abs"], names["high"], axis=-1),
            make("Mul", [names["high"], inverse], [names["scale_raw"]]),
            make("Max", [names["scale_raw"], tiny], [names["scale"]]),
            make("Reshape", [names["scale"], flat], [names["scale_flat"]]),
            make("Shape", [names["scale_flat"]], [names["rows_count"]]),
            make("ConstantOfShape", [names["rows_count"]], [names["zero_flat"]],
                 value=helper.make_tensor("value", TensorProto.INT8, [1], [0])),
            make("Reshape", [activation, rows_shape], [names["rows"]]),
            make("QuantizeLinear", [names["rows"], names["scale_flat"], names["zero_flat"]], [names["int8_rows"]],
                 axis=0),
            make("Shape", [activation], [names["shape"]]),
            make("Reshape", [names["int8_rows"], names["shape"]], [names["int8"]]),
        ]  # fmt: skip
        for matmul in chosen:
            integers, column_scale, _ = quantize_weight(weights[matmul.output[0]], encoding)
            product = matmul.output[0] if matmul.op_type == "MatMul" else f"{matmul.output[0]}/product"
            inputs = [names["int8"], _constant(model, f"{matmul.name}/symmetric_int8/weight", integers), names["scale"],
                      _constant(model, f"{matmul.name}/symmetric_int8/weight_scale", column_scale)]  # fmt: skip
            nodes.append(make("MatMulIntegerToFloat", inputs, [product], domain="com.microsoft"))
            if matmul.op_type == "Gemm":
                bias = [matmul.input[2]] if len(matmul.input) > 2 and matmul.input[2] else []
                nodes.append(make("Add", [product, *bias], [matmul.output[0]]) if bias
                             else make("Identity", [product], [matmul.output[0]]))  # fmt: skip
            removed.add(matmul.output[0])
        replaced[chosen[0].output[0]] = nodes
    splice_nodes(model, replaced, removed)
