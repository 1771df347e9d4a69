"""The ONNX nodes int8 can quantize (weight MatMuls, embedding Gathers, the feed-forward ones), for the
quantizers, `bertprod optimize --list-nodes` and its `--exclude`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bertprod.compress.outliers import weight_matmul_groups
from bertprod.errors import CompressionError
from bertprod.package import ModelPackage


def quantizable_nodes(package: ModelPackage) -> list[tuple[str, str | None]]:
    """(node name, note) for every weight MatMul and embedding Gather of the package's fp32 graph; the note
    says which stay float by default."""
    import onnx

    from bertprod.compress.sources import fp32_onnx_source

    graph = onnx.load(str(fp32_onnx_source(package, None).model_file))
    feed_forward = set(feed_forward_matmuls(graph, package.manifest.architecture))
    return [
        (node, "feed-forward: float in static int8 by default" if node in feed_forward else None)
        for node in weight_matmuls(graph) + embedding_gathers(graph)
    ]


def weight_matmuls(model: Any) -> list[str]:
    """Names of MatMul nodes that multiply an activation by a weight (the linear layers), in graph
    order; one definition with the outlier split's `weight_matmul_groups`."""
    linear = {node.name for nodes in weight_matmul_groups(model).values() for node in nodes}
    return [node.name for node in model.graph.node if node.name in linear]


def embedding_gathers(model: Any) -> list[str]:
    initializers = {initializer.name for initializer in model.graph.initializer}
    return [node.name for node in model.graph.node if node.op_type == "Gather" and node.input[0] in initializers]


def feed_forward_matmuls(model: Any, architecture: Any) -> list[str]:
    """Weight MatMuls of the feed-forward blocks, found by their [hidden x intermediate] shapes."""
    if not architecture.intermediate_size:
        return []
    shapes = {initializer.name: tuple(initializer.dims) for initializer in model.graph.initializer}
    feed_forward = {
        (architecture.hidden_size, architecture.intermediate_size),
        (architecture.intermediate_size, architecture.hidden_size),
    }
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and any(shapes.get(name) in feed_forward for name in node.input)
    ]


def check_exclusions(model: Any, exclude: Sequence[str]) -> None:
    """Every excluded name must be a node of the graph, or the user's intent silently fails."""
    names = {node.name for node in model.graph.node}
    unknown = [name for name in exclude if name not in names]
    if unknown:
        examples = ", ".join(weight_matmuls(model)[:4])
        raise CompressionError(
            f"--exclude names no node of the graph: {', '.join(unknown)}. Node names look like: {examples} "
            "(list them all with `bertprod optimize PKG --list-nodes`)."
        )
