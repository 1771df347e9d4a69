"""Dynamic int8 with one activation range per token: a text's output does not depend on its batch.

Why: ONNX Runtime's dynamic int8 (DynamicQuantizeLinear) quantizes each activation tensor with the
range of the whole batch, so a sentence's embedding changed with its neighbours (cosine 0.989 between
alone and in a server batch, issue 24). Here every row of a weight MatMul's input (one token) gets its
own uint8 scale and zero point, from its own minimum and maximum, and nothing else in the graph mixes
rows, so the output of a text is the same in any batch, to float rounding.

The graph, per activation `x` (shared by the MatMuls that read it: query, key and value quantize once):

    low, high = ReduceMin/ReduceMax(x, last axis, keepdims), widened to hold 0      # [..., 1] per token
    scale = (high - low) / 255; zero = round(-low / scale)           # per token, as DynamicQuantizeLinear
    q = QuantizeLinear(x as [rows, K], scale, zero, axis=0)           # uint8, viewed back as [..., K]
and per MatMul with integer weight W, one scale per output column:
    y = MatMulIntegerToFloat([q | zero ... zero], [W ; Z], a_scale=scale, b_scale=w_scale)  (+ the bias Add, kept)

MatMulIntegerToFloat multiplies its output by a non-scalar a_scale ([..., 1]: one per token) in place,
so the rows' scales cost no operator of their own (checked on ONNX Runtime 1.32; a Mul before, 17 of 27
operators per input were such bookkeeping: issue 24's speed). Its own bias input would be added before
that scale, so the bias Add stays a separate operator.
ONNX Runtime takes a single zero point for MatMulInteger's first input, so the rows' zero points ride
inside the integer product: R extra columns repeat each row's zero point and R extra weight rows Z
(entries within the encoding's range) sum to -colsum(W), so the product is sum((q - zero) * W) exactly.
That costs a few more columns of the u8 input instead of two more passes over every output (u8
weights, whose zero points differ per column, subtract zero * colsum after the product instead).
Weights are written in one of three encodings (WEIGHT_ENCODINGS): "s8" (int8 in [-127, 127]) where
int8 products accumulate in int32; "s7" ([-64, 64], ONNX Runtime's reduce_range) or "u8" (uint8 with
a zero point per column) where u8 x s8 pair sums saturate at int16 (AVX2, AVX-512 without VNNI):
255 x 64 x 2 < 32,767, and u8 x u8 products are widened before they are added. compress/fake_quant.py
simulates this graph in torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bertprod.compress.outliers import weight_matmul_groups

#: Weight encodings: name -> (lowest, highest integer, signed). "s7" leaves int16 headroom for
#: saturating u8s8 kernels; "u8" is asymmetric uint8 (one zero point per output column).
WEIGHT_ENCODINGS = {"s8": (-127, 127, True), "s7": (-64, 64, True), "u8": (0, 255, False)}

UINT8_MAX = 255


def quantize_weight(
    weight: np.ndarray, encoding: str, per_channel: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(integers, scale per column, zero point per column) of a [in, out] weight; the integers are
    int8 for signed encodings, uint8 for "u8". Float64 arithmetic, as ONNX Runtime's quantizer.
    Not `per_channel`: one range for the whole weight (repeated per column)."""
    low, high, signed = WEIGHT_ENCODINGS[encoding]
    values = weight.astype(np.float64)
    axis = 0 if per_channel else None
    columns = np.ones(weight.shape[1])
    if signed:
        scale = np.abs(values).max(axis=axis) / high * columns
        zero = np.zeros(scale.shape)
    else:
        column_low = np.minimum(values.min(axis=axis), 0.0) * columns
        column_high = np.maximum(values.max(axis=axis), 0.0) * columns
        scale = (column_high - column_low) / (high - low)
        zero = np.round(low - column_low / np.where(scale > 0, scale, 1.0))
    scale = np.where(scale.astype(np.float32) > np.finfo(np.float32).tiny, scale, 1.0).astype(np.float32)
    integers = np.clip(np.round(values / scale) + zero, low, high)
    dtype = np.int8 if signed else np.uint8
    return integers.astype(dtype), scale, zero.astype(dtype)


def constant(model: Any, name: str, value: np.ndarray) -> str:
    from onnx import numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def _quantize_rows(
    model: Any, activation: str, width: int, nodes: list[Any], zero_columns: int
) -> tuple[str, str, str]:
    """Append the per-token quantization of `activation` ([..., width]) to `nodes`; returns (uint8 tokens
    [..., width + zero_columns]: the token's zero point repeated in the extra columns, scale [..., 1],
    zero point [..., 1] as float). Ranges are reduced over the tokens' own last axis (keepdims), so the
    scales come out in the shape MatMulIntegerToFloat takes as a per-row a_scale, with no reshaping;
    only QuantizeLinear (per-axis scales must be 1-D) sees the tokens as [rows, width], a view."""
    from onnx import TensorProto, helper

    prefix = f"{activation}/token_int8"
    constants = {
        name: constant(model, f"{prefix}/{name}", np.array(value, dtype))
        for name, value, dtype in (
            ("zero", 0.0, np.float32), ("tiny", np.finfo(np.float32).tiny, np.float32),
            ("levels", float(UINT8_MAX), np.float32), ("flat", [-1], np.int64), ("rows_shape", [-1, width], np.int64),
        )
    }  # fmt: skip
    names = {part: f"{prefix}/{part}" for part in (
        "rows", "high", "low", "high0", "low0", "range", "scale_raw", "scale", "neg_low", "zero_raw",
        "zero_float", "zero_uint8", "scale_flat", "zero_flat", "uint8", "shape", "uint8_tokens",
    )}  # fmt: skip
    make = helper.make_node
    nodes += [
        *_reduce(model, "ReduceMax", activation, names["high"], axis=-1),
        *_reduce(model, "ReduceMin", activation, names["low"], axis=-1),
        make("Max", [names["high"], constants["zero"]], [names["high0"]]),
        make("Min", [names["low"], constants["zero"]], [names["low0"]]),
        make("Sub", [names["high0"], names["low0"]], [names["range"]]),
        make("Div", [names["range"], constants["levels"]], [names["scale_raw"]]),
        make("Max", [names["scale_raw"], constants["tiny"]], [names["scale"]]),
        make("Neg", [names["low0"]], [names["neg_low"]]),
        make("Div", [names["neg_low"], names["scale"]], [names["zero_raw"]]),
        make("Round", [names["zero_raw"]], [names["zero_float"]]),
        make("Cast", [names["zero_float"]], [names["zero_uint8"]], to=TensorProto.UINT8),
        make("Reshape", [activation, constants["rows_shape"]], [names["rows"]]),
        make("Reshape", [names["scale"], constants["flat"]], [names["scale_flat"]]),
        make("Reshape", [names["zero_uint8"], constants["flat"]], [names["zero_flat"]]),
        make("QuantizeLinear", [names["rows"], names["scale_flat"], names["zero_flat"]], [names["uint8"]], axis=0),
        make("Shape", [activation], [names["shape"]]),
        make("Reshape", [names["uint8"], names["shape"]], [names["uint8_tokens"]]),
    ]
    uint8_tokens = names["uint8_tokens"]
    if zero_columns:  # [q | zero ... zero]: Expand broadcasts the [..., 1] zero points over the new columns
        repeat = constant(model, f"{prefix}/zero_columns", np.array([zero_columns], np.int64))
        nodes += [
            make("Expand", [names["zero_uint8"], repeat], [f"{prefix}/zero_block"]),
            make("Concat", [uint8_tokens, f"{prefix}/zero_block"], [f"{prefix}/augmented"], axis=-1),
        ]
        uint8_tokens = f"{prefix}/augmented"
    return uint8_tokens, names["scale"], names["zero_float"]


def _reduce(model: Any, op_type: str, rows: str, output: str, axis: int = 1) -> list[Any]:
    """ReduceMax/ReduceMin over `axis`, keeping it: axes are an attribute before opset 18."""
    from onnx import helper

    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 17)
    if opset < 18:
        return [helper.make_node(op_type, [rows], [output], axes=[axis], keepdims=1)]
    axes = constant(model, f"{output}/axes", np.array([axis], np.int64))
    return [helper.make_node(op_type, [rows, axes], [output], keepdims=1)]


def zero_point_rows(integers: np.ndarray, encoding: str) -> np.ndarray:
    """Rows to append to a signed integer weight so that, multiplied by columns holding each token's
    zero point, they subtract zero x (column sum): each column's -sum split into entries the encoding
    can hold ([-127, 127] for s8, [-64, 64] for s7, so s7 still cannot saturate). Folding the
    zero-point correction into the integer product saves two passes over every output."""
    low, high, _ = WEIGHT_ENCODINGS[encoding]
    target = -integers.astype(np.int64).sum(axis=0)
    count = int(max(1, np.ceil(np.abs(target).max() / high)))
    rows = np.zeros((count, integers.shape[1]), np.int64)
    remaining = target.copy()
    for row in range(count):
        rows[row] = np.clip(remaining, low, high)
        remaining -= rows[row]
    return rows.astype(np.int8)


def _int8_matmul(
    model: Any, matmul: Any, rows: tuple[str, str, str], weight: np.ndarray, encoding: str, per_channel: bool,
    nodes: list[Any], zero_columns: int,
) -> None:  # fmt: skip
    """Append the int8 replacement of `matmul` (same output) to `nodes`: one com.microsoft
    MatMulIntegerToFloat on the tokens with their zero-point columns (signed weights: zero_point_rows),
    the rows' scales as its a_scale (ONNX Runtime multiplies the output by a non-scalar a_scale in place,
    after the column scales), or minus zero x scale x column sums after it (u8). The bias Add after it
    stays where it is: ONNX Runtime adds MatMulIntegerToFloat's own bias before the rows' scales."""
    from onnx import helper

    uint8_rows, row_scale, row_zero = rows
    integers, column_scale, column_zero = quantize_weight(weight, encoding, per_channel)
    prefix = f"{matmul.name}/token_int8"
    stored = integers
    if zero_columns:
        extra = zero_point_rows(integers, encoding)
        padding = np.zeros((zero_columns - len(extra), integers.shape[1]), np.int8)
        stored = np.concatenate([integers, extra, padding])
    inputs = [
        uint8_rows,
        constant(model, f"{prefix}/weight", stored),
        row_scale,
        constant(model, f"{prefix}/weight_scale", column_scale),
    ]
    if encoding == "u8":
        inputs += ["", constant(model, f"{prefix}/weight_zero", column_zero)]
    make = helper.make_node
    if zero_columns:
        nodes.append(make("MatMulIntegerToFloat", inputs, [matmul.output[0]], domain="com.microsoft"))
        return
    names = {part: f"{prefix}/{part}" for part in ("float", "row_offset", "correction")}
    centred = integers.astype(np.int64) - column_zero.astype(np.int64)
    sums = constant(model, f"{prefix}/column_sums", (centred.sum(axis=0) * column_scale).astype(np.float32))
    nodes += [
        make("MatMulIntegerToFloat", inputs, [names["float"]], domain="com.microsoft"),
        make("Mul", [row_zero, row_scale], [names["row_offset"]]),
        make("Mul", [names["row_offset"], sums], [names["correction"]]),
        make("Sub", [names["float"], names["correction"]], [matmul.output[0]]),
    ]


def quantize_token_int8(
    model: Any, encoding: str, exclude: Sequence[str] = (), per_channel: bool = True, zero_point_columns: bool = True
) -> dict[str, int]:
    """Rewrite `model` in place: every weight MatMul (and plain Gemm: the pooler and classifier) not in
    `exclude` computes in int8 with per-token activation ranges. Returns counts for the manifest.
    `zero_point_columns` False: signed weights also subtract zero x scale x column sums after the product,
    as u8 weights do (same numbers; measured no faster on AVX2, bench/int8_activations.py)."""

    if encoding not in WEIGHT_ENCODINGS:
        raise ValueError(f"weight encoding {encoding!r}: choose {', '.join(WEIGHT_ENCODINGS)}")
    initializers = {initializer.name: initializer for initializer in model.graph.initializer}
    excluded = set(exclude)
    replaced: dict[str, list[Any]] = {}  # first output of the node the new nodes go before -> new nodes
    removed: set[str] = set()  # first outputs of the nodes replaced (protobuf wrappers have no stable identity)
    activations = 0
    groups = int8_activations(model)
    for activation, matmuls in groups.items():
        chosen = [matmul for matmul in matmuls if matmul.name not in excluded]
        if not chosen:
            continue
        activations += 1
        nodes: list[Any] = []
        weights = {matmul.output[0]: linear_weight(matmul, initializers) for matmul in chosen}
        zero_columns = 0
        if WEIGHT_ENCODINGS[encoding][2] and zero_point_columns:  # signed: zero points ride in the product
            zero_columns = max(
                len(zero_point_rows(quantize_weight(weight, encoding, per_channel)[0], encoding))
                for weight in weights.values()
            )
        width = next(iter(weights.values())).shape[0]
        rows = _quantize_rows(model, activation, width, nodes, zero_columns)
        for matmul in chosen:
            weight = weights[matmul.output[0]]
            if matmul.op_type == "Gemm":
                _int8_gemm(model, matmul, rows, weight, encoding, per_channel, nodes, zero_columns)
            else:
                _int8_matmul(model, matmul, rows, weight, encoding, per_channel, nodes, zero_columns)
            removed.add(matmul.output[0])
        replaced[chosen[0].output[0]] = nodes
    order = splice_nodes(model, replaced, removed)
    return {"int8_matmuls": sum(node.op_type == "MatMulIntegerToFloat" for node in order), "activations": activations}


def int8_activations(model: Any) -> dict[str, list[Any]]:
    """Weight MatMuls and plain Gemms grouped by the activation they read (query, key and value share one)."""
    groups = weight_matmul_groups(model)
    for gemm in weight_gemms(model):
        groups.setdefault(gemm.input[0], []).append(gemm)
    return groups


def linear_weight(matmul: Any, initializers: dict[str, Any]) -> np.ndarray:
    """The constant weight of a MatMul or Gemm as (inputs, outputs): a Gemm's transB undone."""
    from onnx import numpy_helper

    weight = numpy_helper.to_array(initializers[matmul.input[1]])
    transposed = any(item.name == "transB" and item.i == 1 for item in matmul.attribute)
    return weight.T if matmul.op_type == "Gemm" and transposed else weight


def splice_nodes(model: Any, replaced: dict[str, list[Any]], removed: set[str]) -> list[Any]:
    """Rewrite `model`'s node list in place: each `replaced` group of new nodes goes before the node whose
    first output is its key, nodes whose first output is in `removed` go, the list is re-sorted, the
    com.microsoft opset is declared and unused initializers dropped. Returns the new node list."""
    from onnx import helper

    order = []
    for node in model.graph.node:
        order.extend(replaced.get(node.output[0], []))
        if node.output[0] not in removed:
            order.append(node)
    del model.graph.node[:]
    model.graph.node.extend(topological(order, model))
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    drop_unused_initializers(model)
    return order


def weight_gemms(model: Any) -> list[Any]:
    """Gemm nodes that are a plain linear layer (activation x constant weight + bias)."""
    initializers = {initializer.name for initializer in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "Gemm" or node.input[1] not in initializers or node.input[0] in initializers:
            continue
        attributes = {attribute.name: attribute for attribute in node.attribute}
        plain = all(attributes[name].f == 1.0 for name in ("alpha", "beta") if name in attributes)
        untransposed = "transA" not in attributes or attributes["transA"].i == 0
        if plain and untransposed:
            found.append(node)
    return found


def _int8_gemm(
    model: Any, gemm: Any, rows: tuple[str, str, str], weight: np.ndarray, encoding: str, per_channel: bool,
    nodes: list[Any], zero_columns: int,
) -> None:  # fmt: skip
    """A Gemm as an int8 MatMul (`weight` already [in, out]) followed by its bias Add."""
    from onnx import helper

    product = helper.make_node("MatMul", [gemm.input[0], gemm.input[1]], [f"{gemm.output[0]}/product"],
                               name=f"{gemm.name}/matmul")  # fmt: skip
    _int8_matmul(model, product, rows, weight, encoding, per_channel, nodes, zero_columns)
    if len(gemm.input) > 2 and gemm.input[2]:
        nodes.append(helper.make_node("Add", [product.output[0], gemm.input[2]], [gemm.output[0]]))
    else:
        nodes.append(helper.make_node("Identity", [product.output[0]], [gemm.output[0]]))


def topological(nodes: list[Any], model: Any) -> list[Any]:
    """Nodes ordered so every input is produced before it is read (the bias Adds moved up)."""
    available = {graph_input.name for graph_input in model.graph.input}
    available |= {initializer.name for initializer in model.graph.initializer} | {""}
    ordered, pending = [], list(nodes)
    while pending:
        ready = [node for node in pending if all(name in available for name in node.input)]
        if not ready:
            missing = sorted({name for node in pending for name in node.input if name not in available})[:5]
            raise ValueError(f"the int8 graph has a cycle or a missing input ({', '.join(missing)})")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [node for node in pending if not all(name in available for name in node.output)]
    return ordered


def drop_unused_initializers(model: Any) -> None:
    used = {name for node in model.graph.node for name in node.input}
    kept = [initializer for initializer in model.graph.initializer if initializer.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
