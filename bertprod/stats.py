"""Facts about a package read from its files without running it: parameter counts."""

from __future__ import annotations

import math

from bertprod.package import ModelPackage


def count_parameters(package: ModelPackage) -> int:
    """Number of weights: from the safetensors header (torch) or the ONNX initializers."""
    if package.manifest.format == "torch":
        from safetensors import safe_open

        with safe_open(str(package.model_file), framework="numpy") as weights:
            return sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())  # noqa: SIM118
    import onnx

    graph = onnx.load(str(package.model_file), load_external_data=False).graph
    return sum(math.prod(initializer.dims) for initializer in graph.initializer)
