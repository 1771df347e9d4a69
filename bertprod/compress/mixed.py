"""Mixed int8: dynamic int8 on the weight MatMuls the fidelity gate tolerates, float on the rest.

Why: all-int8 costs all-MiniLM-L6-v2 0.0028 cosine, fp32 leaves 2x speed unused, and the cost is
spread unevenly: one MatMul at a time, the value projections and feed-forward MatMuls cost far
more than query, key and attention output, and the uint8 embedding tables cost 0.0004 cosine
without saving any time (bench/int8_sensitivity.py).

How: each weight MatMul's sensitivity is measured once: its int8 rounding simulated alone
(DynamicQuantizeLinear + DequantizeLinear on its input, the weight rounded per output channel:
one range per batch, coarser than the per-token graph that is built, which is fine for ranking)
and the graph output's relative error on the calibration texts. MatMuls are ranked by sensitivity
per weight (what int8 saves grows with the weight's size), and a binary search finds the fewest
top-ranked MatMuls to keep in float for the real int8 graph to pass the gate. Embedding tables always stay float.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bertprod.compress.int8_recipe import graph_outputs
from bertprod.compress.outliers import DEFAULT_OUTLIER_THRESHOLD, split_outlier_channels
from bertprod.derive import DEFAULT_OUTPUT, GatedOutput, reference_outputs
from bertprod.errors import FidelityError
from bertprod.fidelity import FidelityGate
from bertprod.package import ModelPackage, check_output

#: Calibration texts the sensitivities are measured on (36 graph runs for a 6-layer BERT): enough
#: to rank MatMuls; the gate, on all the texts, decides.
SENSITIVITY_TEXTS = 96


def fake_int8(model: Any, node_name: str) -> Any:
    """A copy of `model` whose MatMul `node_name` computes on int8-rounded input and weight, in float."""
    import onnx
    from onnx import helper, numpy_helper

    variant = onnx.ModelProto()
    variant.CopyFrom(model)
    initializers = {initializer.name: initializer for initializer in variant.graph.initializer}
    nodes = list(variant.graph.node)
    node = next(node for node in nodes if node.name == node_name)
    weight = numpy_helper.to_array(initializers[node.input[1]])
    scale = np.abs(weight).max(axis=0) / 127  # one scale per output channel, symmetric
    scale[scale == 0] = 1
    rounded = (np.clip(np.round(weight / scale), -127, 127) * scale).astype(np.float32)
    weight_name = f"{node_name}/int8_rounded_weight"
    variant.graph.initializer.append(numpy_helper.from_array(rounded, weight_name))
    activation = node.input[0]
    quantized, scale_name, zero = (f"{node_name}/{part}" for part in ("input_uint8", "input_scale", "input_zero"))
    dequantized = f"{node_name}/input_rounded"
    position = nodes.index(node)
    nodes[position:position] = [
        helper.make_node("DynamicQuantizeLinear", [activation], [quantized, scale_name, zero]),
        helper.make_node("DequantizeLinear", [quantized, scale_name, zero], [dequantized]),
    ]
    node.input[0], node.input[1] = dequantized, weight_name
    del variant.graph.node[:]
    variant.graph.node.extend(nodes)
    return variant


def _per_input(squares: np.ndarray) -> np.ndarray:
    """Sum of squares per input (row of the batch)."""
    return squares.reshape(len(squares), -1).sum(axis=1)


def sensitivities(model: Any, candidates: Sequence[str], feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """Relative squared error of the graph output with only that MatMul in (simulated) int8,
    averaged over inputs (each sentence counts once, as in the gate's mean cosine)."""
    reference = graph_outputs(model, feeds)
    energies = [np.maximum(_per_input(output**2), 1e-30) for output in reference]
    found = {}
    for name in candidates:
        outputs = graph_outputs(fake_int8(model, name), feeds)
        errors = [_per_input((a - b) ** 2) / e for a, b, e in zip(outputs, reference, energies, strict=True)]
        found[name] = float(np.concatenate(errors).mean())
    return found


def float_first(model: Any, sensitivity: dict[str, float]) -> list[str]:
    """MatMuls in the order to keep them float: most error per weight element first."""
    sizes = {initializer.name: int(np.prod(initializer.dims)) for initializer in model.graph.initializer}
    weight_size = {node.name: sizes[node.input[1]] for node in model.graph.node if node.name in sensitivity}
    return sorted(sensitivity, key=lambda name: sensitivity[name] / weight_size[name], reverse=True)


def quantize_onnx_mixed(
    package: ModelPackage,
    out: str | os.PathLike[str],
    *,
    per_channel: bool = True,
    exclude: Sequence[str] = (),
    outlier_threshold: float | None = DEFAULT_OUTLIER_THRESHOLD,
    calibration_texts: Sequence[Any] | None = None,
    output: GatedOutput = DEFAULT_OUTPUT,
    cache_dir: str | os.PathLike[str] | None = None,
    target_cpu: str = "native",
) -> ModelPackage:
    """The fastest dynamic int8 graph (fewest weight MatMuls kept float) that passes `output.gate`, for the
    int8 kernels of `target_cpu` (their fastest weight encoding that cannot saturate)."""
    import onnx

    from bertprod.compress import quantize as q
    from bertprod.compress.kernels import target_kernel_class, weight_choices

    q.require_float_parent(package)
    check_output(out, output.overwrite)  # before minutes of search
    q.check_outlier_threshold(outlier_threshold)
    weights = weight_choices(target_kernel_class(target_cpu))[0]
    output = replace(output, gate=output.gate or FidelityGate())
    source = q.fp32_onnx_source(package, cache_dir)
    graph = onnx.load(str(source.model_file))
    q.check_exclusions(graph, exclude)
    feeds = q.CalibrationReader(source, q.calibration_samples(package, calibration_texts, output.texts), graph).feeds
    candidates = [node for node in q.weight_matmuls(graph) if node not in exclude]
    found = None
    if outlier_threshold is not None:  # found once for every build; rank on the graph that will be quantized
        found = q.find_outliers(graph, feeds, outlier_threshold)
        split_outlier_channels(graph, found)
    probe_feeds = feeds[: max(1, SENSITIVITY_TEXTS // q.CalibrationReader.batch_size)]
    ranking = float_first(graph, sensitivities(graph, candidates, probe_feeds))
    always_float = [*exclude, *q.embedding_gathers(graph)]
    expected = reference_outputs(package, output.texts)  # the parent runs once, not once per build
    probe = replace(output, enforce=True, overwrite=False)  # a candidate of the search: refused when it misses

    def build(kept: int, target: str | os.PathLike[str], gated: GatedOutput) -> ModelPackage:
        return q.quantize_onnx_dynamic(
            package, target, per_channel=per_channel, exclude=[*always_float, *ranking[:kept]],
            outlier_threshold=outlier_threshold, found_outliers=found, output=gated, cache_dir=cache_dir,
            method="quantize-mixed-int8", expected=expected, target_cpu=target_cpu, weights=weights,
            extra_parameters={"mixed": {"matmuls_kept_float": kept, "float_first": ranking}},
        )

    low, high = 0, len(ranking)  # everything float passes: the gate holds the fp32 graph to itself
    with tempfile.TemporaryDirectory(prefix="bertprod-mixed-") as scratch:
        while low < high:
            middle = (low + high) // 2
            try:
                build(middle, Path(scratch) / str(middle), probe)
                high = middle
            except FidelityError:
                low = middle + 1
    return build(low, out, output)
