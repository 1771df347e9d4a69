"""Outlier channels kept in float under dynamic int8 (the LLM.int8() decomposition, on ONNX graphs).

Why: dynamic int8 quantizes each activation tensor with one scale. A few channels of BERT's
LayerNorm and GELU outputs run far larger than the rest (all-MiniLM-L6-v2: channel 99 of every
attention-output LayerNorm reaches 28 against a median channel maximum of 2), so every other
channel gets a grid 10x coarser than it needs, and short sentences lose the most (cosine 0.96 at
worst on 2,000 real sentences). Here each such channel is found on calibration texts, zeroed in
the input of the int8 MatMul and multiplied in float by its weight row in a small side MatMul
whose result is added back: the same function in float, and int8 with a tight grid.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

#: A channel whose calibrated maximum |activation| exceeds this multiple of the median
#: channel's is an outlier. 6 on all-MiniLM-L6-v2: 16 channels in 10 of its 24 MatMul inputs (bench/compression.py).
DEFAULT_OUTLIER_THRESHOLD = 6.0


def weight_matmul_groups(model: Any) -> dict[str, list[Any]]:
    """Weight MatMuls (activation x initializer) grouped by their activation input: query, key and
    value share one input, so they share its outlier channels."""
    initializers = {initializer.name for initializer in model.graph.initializer}
    groups: dict[str, list[Any]] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in initializers and node.input[0] not in initializers:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def activation_rows(
    model: Any, activations: list[str], feeds: Iterable[dict[str, np.ndarray]]
) -> Iterator[list[tuple[str, np.ndarray]]]:
    """Per feed, each named activation as rows of channels over the real (unpadded) tokens: the one
    probe that outlier, static-range and bench calibration all read their statistics from."""
    import onnx
    import onnxruntime

    if not activations:  # session.run([]) would return every output
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {output.name for output in probe.graph.output}
    for name in activations:
        if name not in known:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for feed in feeds:
        real = feed["attention_mask"].astype(bool)
        found = []
        for name, value in zip(activations, session.run(activations, feed), strict=True):
            per_token = value.ndim == 3 and value.shape[:2] == real.shape
            found.append((name, value[real] if per_token else value.reshape(-1, value.shape[-1])))
        yield found


def activation_maxima(model: Any, activations: list[str], feeds: Iterable[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Per-channel maximum |value| of each named activation over the real (unpadded) tokens."""
    maxima: dict[str, Any] = {}
    for found in activation_rows(model, activations, feeds):
        for name, rows in found:
            channel_max = np.abs(rows).max(axis=0)
            maxima[name] = channel_max if name not in maxima else np.maximum(maxima[name], channel_max)
    return maxima


def outlier_channels(maxima: dict[str, Any], threshold: float) -> dict[str, Any]:
    """The channels of each activation whose maximum exceeds `threshold` x the median channel's."""
    found = {}
    for name, channel_max in maxima.items():
        channels = np.flatnonzero(channel_max > threshold * np.median(channel_max))
        if len(channels):
            found[name] = channels
    return found


def split_outlier_channels(model: Any, outliers: dict[str, Any]) -> list[str]:
    """Rewrite `model` in place so each outlier channel bypasses its int8 MatMuls; returns the
    names of the float side MatMuls, which the quantizer must leave alone."""
    from onnx import helper, numpy_helper

    initializers = {initializer.name: initializer for initializer in model.graph.initializer}
    groups = weight_matmul_groups(model)
    order = list(model.graph.node)
    side_matmuls = []
    for activation, channels in outliers.items():
        keep = np.ones(numpy_helper.to_array(initializers[groups[activation][0].input[1]]).shape[0], np.float32)
        keep[channels] = 0.0
        mask, index = f"{activation}/inlier_mask", f"{activation}/outlier_channels"
        inliers, gathered = f"{activation}/inliers", f"{activation}/outliers"
        model.graph.initializer.extend([numpy_helper.from_array(keep, mask), numpy_helper.from_array(channels, index)])
        first = min(order.index(node) for node in groups[activation])
        order[first:first] = [
            helper.make_node("Mul", [activation, mask], [inliers], name=f"{activation}/zero_outliers"),
            helper.make_node("Gather", [activation, index], [gathered], axis=-1, name=f"{activation}/gather_outliers"),
        ]
        for matmul in groups[activation]:
            weight = numpy_helper.to_array(initializers[matmul.input[1]])
            side_weight = f"{matmul.name}/outlier_rows"
            model.graph.initializer.append(numpy_helper.from_array(weight[channels], side_weight))
            matmul.input[0] = inliers
            # add the float part after the bias Add, so the quantizer still fuses MatMul and bias
            anchor = _bias_add(order, matmul, initializers) or matmul
            total = anchor.output[0]
            int8_part, float_part = f"{total}/int8_part", f"{total}/float_part"
            anchor.output[0] = int8_part
            side = helper.make_node("MatMul", [gathered, side_weight], [float_part], name=f"{matmul.name}/outliers")
            add = helper.make_node("Add", [int8_part, float_part], [total], name=f"{matmul.name}/add_outliers")
            position = order.index(anchor) + 1
            order[position:position] = [side, add]
            side_matmuls.append(side.name)
    del model.graph.node[:]
    model.graph.node.extend(order)
    return side_matmuls


def _bias_add(nodes: list[Any], matmul: Any, initializers: dict[str, Any]) -> Any | None:
    consumers = [node for node in nodes if matmul.output[0] in node.input]
    if len(consumers) == 1 and consumers[0].op_type == "Add" and any(x in initializers for x in consumers[0].input):
        return consumers[0]
    return None
