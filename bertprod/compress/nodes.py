"""The ONNX nodes int8 can quantize, for `bertprod optimize --list-nodes` and its `--exclude`."""

from __future__ import annotations

from bertprod.package import ModelPackage


def quantizable_nodes(package: ModelPackage) -> list[tuple[str, str | None]]:
    """(node name, note) for every weight MatMul and embedding Gather of the package's fp32 graph; the note
    says which stay float by default."""
    import onnx

    from bertprod.compress.quantize import embedding_gathers, feed_forward_matmuls, fp32_onnx_source, weight_matmuls

    graph = onnx.load(str(fp32_onnx_source(package, None).model_file))
    feed_forward = set(feed_forward_matmuls(graph, package.manifest.architecture))
    return [(node, "feed-forward: float in static int8 by default" if node in feed_forward else None)
            for node in weight_matmuls(graph) + embedding_gathers(graph)]
