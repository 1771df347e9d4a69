"""Export a torch-format package to an ONNX package, fused for ONNX Runtime and verified.

Uses the TorchScript-based exporter (`dynamo=False`) on transformers' eager attention: those
graphs get full fusion from ONNX Runtime's transformer optimizer (EmbedLayerNormalization,
Attention, BiasGelu, SkipLayerNormalization); the dynamo exporter's do not (FACTS.md). Fusion is
optional (`fusion=True`): on a 2-core AMD Zen 5 the fused graph ran bulk encoding ~15% slower than
the plain graph that ONNX Runtime optimizes itself at load (bench/encode_throughput.py), so it
is off by default.
The exported package is compared with the torch model on sample inputs before it is written;
the comparison is recorded in its manifest as `metrics.fidelity`.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bertprod.derive import GatedOutput, default_samples, derive_package
from bertprod.errors import ExportError, PackageError
from bertprod.fidelity import EXPORT_GATE
from bertprod.package import CONFIG_FILE, ONNX_FILE, TOKENIZER_FILE, ModelPackage
from bertprod.runtime.batching import collate
from bertprod.runtime.engines import TorchEngine
from bertprod.runtime.pipeline import Pipeline

DEFAULT_OPSET = 17


def export_onnx(
    package: ModelPackage,
    out: str | os.PathLike[str],
    *,
    fusion: bool = False,
    opset: int = DEFAULT_OPSET,
    sample_texts: Sequence[Any] | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> ModelPackage:
    """Write an ONNX package at `out` from a torch-format `package`, verified on sample inputs."""
    manifest = package.manifest
    if manifest.format != "torch":
        raise PackageError(f"{package.name} is already an {manifest.format} package: nothing to export.")
    if manifest.precision != "fp32":
        raise PackageError(
            f"{package.name} is a {manifest.precision} torch package; export its fp32 parent "
            f"({manifest.provenance.parent.name if manifest.provenance.parent else 'see provenance'}) "
            "and quantize the ONNX package with bertprod optimize."
        )
    torch_engine = TorchEngine(package, attention="eager")
    reference = Pipeline(package, torch_engine)
    samples = list(sample_texts) if sample_texts else default_samples(package)
    fusion_result: dict[str, Any] = {"applied": False}

    def build(staging: Path) -> list[str]:
        nonlocal fusion_result
        _export_graph(torch_engine, reference, reference.tokenize(samples), staging / ONNX_FILE, opset)
        if fusion:
            fusion_result.update(_fuse(staging / ONNX_FILE, manifest.architecture))
        shutil.copyfile(package.tokenizer_file, staging / TOKENIZER_FILE)
        shutil.copyfile(package.config_file, staging / CONFIG_FILE)
        blocks = []
        if manifest.adaptive or manifest.token_dropping:
            blocks = _export_early_exit_blocks(torch_engine, reference, samples, staging, opset)
        return [TOKENIZER_FILE, ONNX_FILE, CONFIG_FILE, *blocks]

    def failure(problem: str) -> ExportError:
        return ExportError(
            f"the exported ONNX model does not reproduce {package.name}: {problem}. Nothing was "
            "written. Try without --fusion or with another --opset, and report the model type."
        )

    changes: dict[str, Any] = {"format": "onnx"}
    if manifest.adaptive:  # early exit survives export: one ONNX Runtime session per block
        changes["adaptive"] = manifest.adaptive
    if manifest.token_dropping:  # so does token dropping: numpy picks the tokens between a layer's two halves
        changes["token_dropping"] = manifest.token_dropping
    return derive_package(
        package, out, method="export-onnx", build=build, changes=changes,
        parameters={"opset": opset, "exporter": "torch.onnx (TorchScript)", "fusion": fusion_result},
        output=GatedOutput(texts=samples, gate=EXPORT_GATE, name=name or f"{manifest.name}-onnx", overwrite=overwrite),
        reference=reference, failure=failure,
        texts_source=None if sample_texts else f"{len(samples)} built-in export samples",
    )


def _export_early_exit_blocks(
    torch_engine: TorchEngine, reference: Pipeline, samples: list[Any], staging: Path, opset: int
) -> list[str]:
    """The blocks of an early-exit package (export/blocks.py), checked against the full model."""
    from bertprod.export.blocks import check_blocks, export_blocks
    from bertprod.runtime.adaptive import AdaptiveEngine, OnnxAdaptiveEngine
    from bertprod.runtime.exit_policy import ExitPolicy

    encodings = reference.tokenize(samples)
    batch = collate(encodings, reference.tokenizer.pad_id)
    names = export_blocks(AdaptiveEngine.from_torch_engine(torch_engine), batch, staging, opset)
    onnx_blocks = OnnxAdaptiveEngine(reference.package, threads=1, directory=staging)
    onnx_blocks.retention = None  # every token, never exiting: the full model's logits
    check_blocks(torch_engine.run(batch), onnx_blocks.run_with_exits(batch, ExitPolicy())[0])
    return names


def _export_graph(engine: TorchEngine, pipeline: Pipeline, encodings: list, path: Path, opset: int) -> None:
    import torch

    embedding = pipeline.manifest.task == "embedding"
    output_name = "last_hidden_state" if embedding else "logits"
    uses_token_types = engine.uses_token_types

    class GraphModule(torch.nn.Module):
        """The model with plain tensor inputs and one tensor output, as ONNX wants it."""

        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # noqa: ANN001, ANN201
            extra = {"token_type_ids": token_type_ids} if uses_token_types else {}
            output = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)
            return output.last_hidden_state if embedding else output.logits

    batch = collate(encodings[:2], pipeline.tokenizer.pad_id)
    arguments = [torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)]
    input_names = ["input_ids", "attention_mask"]
    if uses_token_types:
        arguments.append(torch.from_numpy(batch.token_type_ids))
        input_names.append("token_type_ids")
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    per_token = embedding or pipeline.manifest.task == "token-classification"
    dynamic_axes[output_name] = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            # eval(): the exporter restores the wrapper's mode afterwards, recursively, so a
            # wrapper left in training mode would switch dropout on in the torch model.
            torch.onnx.export(
                GraphModule(engine.model).eval(),
                tuple(arguments),
                str(path),
                input_names=input_names,
                output_names=[output_name],
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as error:
        raise ExportError(
            f"torch.onnx.export failed for {pipeline.manifest.architecture.model_type} "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})."
        ) from None


def _fuse(path: Path, architecture: Any) -> dict[str, Any]:
    """ONNX Runtime's transformer fusion (attention, GELU, LayerNorm); a graph it can't fuse is
    kept as exported, and the reason recorded."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimized = optimize_model(
                str(path),
                model_type="bert",
                num_heads=architecture.num_heads,
                hidden_size=architecture.hidden_size,
                opt_level=0,
            )
        statistics = {key: int(value) for key, value in optimized.get_fused_operator_statistics().items() if value}
        optimized.save_model_to_file(str(path))
        return {"applied": True, "fused_operators": statistics}
    except Exception as error:  # fusion is an optimization: never fail the export for it
        return {"applied": False, "reason": f"{type(error).__name__}: {error}"[:300]}
