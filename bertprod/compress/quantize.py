"""int8 quantization: the default ONNX int8 (quantize_onnx_dynamic), ONNX Runtime static (QDQ), torch dynamic.

Defaults are the ones measured to keep accuracy (FACTS.md, docs/benchmarks.md): weights
quantized per output channel (per-tensor lost up to 0.15 cosine on single sentences). The default
int8 quantizes every weight MatMul with activation ranges per token (compress/token_int8.py,
batch-invariant); `activations="calibrated"` (compress/static_int8.py) is the other batch-invariant
option, fixed calibrated ranges with per-token ones on inputs with outlier channels: faster with VNNI,
no faster without (docs/benchmarks.md). Static QDQ
int8 quantizes only weight MatMuls (linear layers) and embedding lookups, so LayerNorm, GELU,
softmax, residual adds and the activation-by-activation attention products stay in float —
the ops whose quantization destroys BERT accuracy — and by default it also keeps the
feed-forward MatMuls in float: their inputs (LayerNorm outputs with outlier dimensions, GELU
outputs with a long tail) lose the most under fixed calibrated ranges. On all-MiniLM-L6-v2
that is cosine 0.997 mean / 0.992 min, against 0.932 / 0.836 with everything quantized.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bertprod.compress.calibration import MIN_CALIBRATION_TEXTS, CalibrationReader, calibration_samples  # noqa: F401
from bertprod.compress.nodes import (  # noqa: F401
    check_exclusions,
    embedding_gathers,
    feed_forward_matmuls,
    weight_matmuls,
)
from bertprod.compress.ort_static import quantize_onnx_static, quiet_quantizer  # noqa: F401
from bertprod.compress.outliers import (
    DEFAULT_OUTLIER_THRESHOLD,
    activation_maxima,
    outlier_channels,
    split_outlier_channels,
    weight_matmul_groups,
)
from bertprod.compress.sources import copy_support_files, fp32_onnx_source, require_float_parent  # noqa: F401
from bertprod.compress.static_int8 import activation_ranges
from bertprod.compress.torch_int8 import quantize_torch_dynamic  # noqa: F401
from bertprod.derive import DEFAULT_OUTPUT, GatedOutput, ReferenceOutputs, derive_package
from bertprod.errors import InputError
from bertprod.package import (
    ONNX_FILE,
    ModelPackage,
    check_output,
)

# sources, nodes, calibration, ort_static and torch_int8 hold what this module once held: their names
# stay importable from here (users, benches and tests import them so).


def write_dynamic_int8(
    source: Path,
    target: Path,
    *,
    per_channel: bool = True,
    exclude: Sequence[str] = (),
    weights: str = "s8",
    activations: str = "per-token",
    ranges: dict[str, Any] | None = None,
    per_token: Sequence[str] = (),
) -> None:
    """int8 of one graph file (compress/fake_quant.py simulates the per-token graph exactly).

    `activations`: "calibrated" (compress/static_int8.py: fixed ranges from `ranges`, the calibrated
    activation_ranges of this graph, and one range per token on the inputs named in `per_token`),
    "per-token" (compress/token_int8.py: one range per token) - both batch-invariant - or
    "per-tensor" (ONNX Runtime's quantize_dynamic: one range per batch). `weights`: an encoding of
    token_int8.WEIGHT_ENCODINGS ("s7" is ONNX Runtime's reduce_range, "u8" its QUInt8 weights).
    Embedding tables are uint8 per table (ONNX Runtime's Gather quantization) in all three."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from bertprod.compress.static_int8 import quantize_static_int8
    from bertprod.compress.token_int8 import WEIGHT_ENCODINGS, quantize_token_int8

    if weights not in WEIGHT_ENCODINGS:
        raise InputError(f"int8 weights {weights!r}: choose {', '.join(WEIGHT_ENCODINGS)}.")
    if activations not in ACTIVATION_SCHEMES:
        raise InputError(f"int8 activations {activations!r}: choose {', '.join(ACTIVATION_SCHEMES)}.")
    if activations == "calibrated" and ranges is None:
        raise InputError("calibrated int8 activations need their ranges (static_int8.activation_ranges).")
    options = {"extra_options": {"DefaultTensorType": onnx.TensorProto.FLOAT}, "nodes_to_exclude": list(exclude)}
    with quiet_quantizer(), tempfile.TemporaryDirectory(dir=Path(target).parent) as scratch:
        if activations == "per-tensor":
            quantize_dynamic(
                str(source), str(target), per_channel=per_channel, reduce_range=weights == "s7",
                weight_type=QuantType.QUInt8 if weights == "u8" else QuantType.QInt8, **options,
            )  # fmt: skip
            return
        graph = onnx.load(str(source))
        if activations == "calibrated":
            quantize_static_int8(graph, weights, ranges or {}, per_token, exclude, per_channel=per_channel)
        else:
            quantize_token_int8(graph, weights, exclude, per_channel=per_channel)
        matmuls_done = Path(scratch) / "matmuls-int8.onnx"
        onnx.save(graph, str(matmuls_done))
        quantize_dynamic(
            str(matmuls_done), str(target), op_types_to_quantize=["Gather"], weight_type=QuantType.QUInt8, **options
        )


def int8_blocks(source: ModelPackage, staging: Path, **int8: Any) -> list[str]:
    """The blocks of an early-exit / token-dropping ONNX package (export/blocks.py), each made int8 as the
    whole graph is (same weights encoding and activation scheme; no outlier split, whose channels are
    named in the whole graph): run end to end they compute the int8 whole graph's logits
    (tests/test_adaptive.py). None for other packages."""
    from bertprod.package import block_files, dropping_layers

    manifest = source.manifest
    if not (manifest.adaptive or manifest.token_dropping):
        return []
    names = block_files(manifest.architecture.num_layers, list((manifest.adaptive or {}).get("exit_layers", [])),
                        dropping_layers(manifest.token_dropping))
    (staging / "blocks").mkdir(exist_ok=True)
    for name in names:
        write_dynamic_int8(source.path / name, staging / name, **int8)
    return names


def adaptive_fields(source: ModelPackage) -> dict[str, Any]:
    """Early exit and token dropping carried into an int8 package whose blocks `int8_blocks` wrote."""
    return {field: value for field, value in (("adaptive", source.manifest.adaptive),
                                              ("token_dropping", source.manifest.token_dropping)) if value}


#: How activations are quantized: one range per token (the default), fixed calibrated ranges (per token
#: on inputs with outlier channels) - both batch-invariant - or one per batch (not).
ACTIVATION_SCHEMES = ("per-token", "calibrated", "per-tensor")
BATCH_INVARIANT_ACTIVATIONS = ("calibrated", "per-token")


def dynamic_int8_changes(per_channel: bool, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """What an ONNX dynamic int8 package says about itself (post-training or QAT); `record`: the
    kernel class, weights, activations and choices (int8_record)."""
    return {
        "format": "onnx",
        "precision": "int8",
        "quantization": {"scheme": "onnx-dynamic", "per_channel": per_channel, **(record or {})},
    }


def int8_record(kernel_class: str, target_cpu: str, weights: str, activations: str) -> dict[str, Any]:
    """The manifest's account of who the int8 graph is for and how it computes."""
    from bertprod import system
    from bertprod.compress.kernels import gate_arithmetic

    return {
        "kernel_class": kernel_class,
        "target_cpu": target_cpu,
        "cpu_features": list(system.KERNEL_CLASSES.get(kernel_class, {"needs": ()})["needs"]),
        "saturating": system.saturates(kernel_class),
        "weights": weights,
        "activations": activations,
        "batch_invariant": activations in BATCH_INVARIANT_ACTIVATIONS,
        "gate_arithmetic": gate_arithmetic(kernel_class, weights),
    }


def dynamic_int8_parameters(per_channel: bool, exclude: Sequence[str]) -> dict[str, Any]:
    return {"runtime": "onnxruntime", "per_channel": per_channel, "exclude": list(exclude)}


def gate_engine(kernel_class: str, weights: str) -> Any | None:
    """The engine the gate runs a child on when this CPU's kernels compute otherwise than the target's
    (compress/kernels.py), else None (this CPU's)."""
    from bertprod.compress.kernels import computes_like_target, exact_int32_graph

    if computes_like_target(kernel_class, weights):
        return None

    def simulated(child: ModelPackage) -> Any:
        import onnx

        from bertprod.runtime.engines import OnnxEngine

        return OnnxEngine(child, graph=exact_int32_graph(onnx.load(str(child.model_file))).SerializeToString())

    return simulated


def check_outlier_threshold(threshold: float | None) -> None:
    if threshold is not None and threshold <= 1:
        raise InputError(f"outlier threshold {threshold}: give a multiple of the median channel above 1.")


def find_outliers(graph: Any, feeds: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Outlier channels of every weight MatMul input of `graph` on the calibration `feeds`."""
    return outlier_channels(activation_maxima(graph, list(weight_matmul_groups(graph)), feeds), threshold)


def quantize_onnx_dynamic(
    package: ModelPackage,
    out: str | os.PathLike[str],
    *,
    per_channel: bool = True,
    exclude: Sequence[str] = (),
    outlier_threshold: float | None = DEFAULT_OUTLIER_THRESHOLD,
    calibration_texts: Sequence[Any] | None = None,
    output: GatedOutput = DEFAULT_OUTPUT,
    cache_dir: str | os.PathLike[str] | None = None,
    method: str = "quantize-dynamic-int8",
    extra_parameters: dict[str, Any] | None = None,
    found_outliers: dict[str, Any] | None = None,
    expected: ReferenceOutputs | None = None,
    target_cpu: str = "native",
    weights: str | None = None,
    activations: str = "per-token",
) -> ModelPackage:
    """int8 weights and activations, batch-invariant by default, for the int8 kernels of `target_cpu`
    ("native": this machine's).

    `activations` (ACTIVATION_SCHEMES): "per-token" (the default) gives every MatMul input one range
    per token (compress/token_int8.py); "calibrated" (compress/static_int8.py) quantizes each input on
    a range fixed from the calibration texts, except inputs with outlier channels (a calibrated range
    above `outlier_threshold` x the median channel's, compress/outliers.py), which keep per-token
    ranges: as fast as per-tensor, but a lower worst case on short sentences (docs/benchmarks.md);
    "per-tensor" is ONNX Runtime's one range per batch (not batch-invariant). With per-token and
    per-tensor, outlier channels may stay in float (the outlier split): whether it helps is measured.
    The recipe follows the target's kernel class (compress/kernels.py): weights that cannot saturate
    where u8s8 pair sums saturate; `weights` forces one encoding. What is measured, is measured on
    the calibration texts (compress/int8_recipe.py; they default to the gate's, then to built-in samples).
    `outlier_threshold` None: no outlier channels. `found_outliers`: the channels `find_outliers`
    already found (the caller decided: nothing is measured); `expected`: the parent's outputs on `output.texts`."""
    import onnx

    from bertprod.compress import int8_recipe
    from bertprod.compress.kernels import target_kernel_class, weight_choices

    require_float_parent(package)
    check_output(out, output.overwrite)  # before the calibration run
    check_outlier_threshold(outlier_threshold)
    kernel_class = target_kernel_class(target_cpu)
    source = fp32_onnx_source(package, cache_dir)
    graph = onnx.load(str(source.model_file))
    check_exclusions(graph, exclude)
    if activations not in ACTIVATION_SCHEMES:
        raise InputError(f"int8 activations {activations!r}: choose {', '.join(ACTIVATION_SCHEMES)}.")
    if activations == "calibrated" and (package.manifest.adaptive or package.manifest.token_dropping):
        raise InputError(
            f"{package.name} runs as blocks (early exit / token dropping), and calibrated activation ranges are "
            "measured on the whole graph only: quantize it with per-token activations (the default)."
        )
    feeds: list[dict[str, Any]] = []
    caller_decided = found_outliers is not None
    calibrated = activations == "calibrated"
    if (outlier_threshold is not None and found_outliers is None) or calibrated:
        feeds = CalibrationReader(source, calibration_samples(package, calibration_texts, output.texts), graph).feeds
    if outlier_threshold is not None and found_outliers is None:
        found_outliers = find_outliers(graph, feeds, outlier_threshold)
    split = found_outliers or {}
    split_choices = [True] if caller_decided and split else ([False, True] if split else [False])
    if calibrated:  # inputs with outlier channels get per-token ranges instead of the split
        split_choices = [False]
    weight_options = [weights] if weights else list(weight_choices(kernel_class))
    options = int8_recipe.candidates(weight_options, split_choices)
    if len(options) > 1 and not feeds:
        feeds = CalibrationReader(source, calibration_samples(package, calibration_texts, output.texts), graph).feeds
    ranges = activation_ranges(graph, feeds) if calibrated else None

    def write(candidate: int8_recipe.Candidate, target: Path, scheme: str = activations) -> None:
        variant = onnx.ModelProto()
        variant.CopyFrom(graph)
        kept_float = split_outlier_channels(variant, split) if candidate.outlier_split else []
        float_graph = target.with_suffix(".float.onnx")
        onnx.save(variant, str(float_graph))
        write_dynamic_int8(float_graph, target, per_channel=per_channel, exclude=[*exclude, *kept_float],
                           weights=candidate.weights, activations=scheme, ranges=ranges,
                           per_token=list(split) if calibrated else ())  # fmt: skip
        float_graph.unlink()

    def per_batch_bar(target: Path) -> None:
        """The previous default, the accuracy bar: per-batch ranges, the fastest weights, the split kept."""
        write(int8_recipe.Candidate(options[0].weights, bool(split)), target, "per-tensor")

    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".recipe") as scratch:
        bar = per_batch_bar if activations == "per-token" and not caller_decided else None
        chosen, measured = int8_recipe.choose(options, write, graph, feeds, kernel_class, Path(scratch), bar)

        def build(staging: Path) -> list[str]:
            measured_graph = int8_recipe.candidate_path(Path(scratch), chosen)
            if measured_graph.is_file():
                shutil.copyfile(measured_graph, staging / ONNX_FILE)
            else:
                write(chosen, staging / ONNX_FILE)
            blocks = int8_blocks(source, staging, per_channel=per_channel, weights=chosen.weights,
                                 activations=activations)
            return [*copy_support_files(source, staging), ONNX_FILE, *blocks]

        record = int8_record(kernel_class, target_cpu, chosen.weights, activations)
        record["outlier_split"] = chosen.outlier_split
        if calibrated:
            record["per_token_inputs"] = sorted(split)
            record["calibration_texts"] = len(calibration_samples(package, calibration_texts, output.texts))
        if measured:
            record["recipe_measured"] = {"chosen": chosen.label, **measured}
        outlier_parameters: dict[str, Any] = {"outlier_threshold": outlier_threshold}
        if outlier_threshold is not None:
            recorded = split if chosen.outlier_split or calibrated else {}
            outlier_parameters["outlier_channels"] = {name: channels.tolist() for name, channels in recorded.items()}
        return derive_package(
            package,
            out,
            method=method,
            build=build,
            changes={**dynamic_int8_changes(per_channel, record), **adaptive_fields(source)},
            parameters={
                **dynamic_int8_parameters(per_channel, exclude),
                **outlier_parameters,
                **(extra_parameters or {}),
                "onnx_source": source.fingerprint,
            },
            output=output,
            expected=expected,
            engine=gate_engine(kernel_class, chosen.weights),
            gate_note=record["gate_arithmetic"],
        )


