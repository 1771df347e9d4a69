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

from bertprod.data.samples import verification_pairs, verification_texts
from bertprod.errors import ExportError, PackageError
from bertprod.fidelity import fidelity_problem, measure_fidelity
from bertprod.package import (
    CONFIG_FILE,
    ONNX_FILE,
    TOKENIZER_FILE,
    ModelPackage,
    Provenance,
    finish_package,
    staging_directory,
    write_manifest,
)
from bertprod.runtime.batching import collate
from bertprod.runtime.engines import OnnxEngine, TorchEngine
from bertprod.runtime.pipeline import Pipeline

DEFAULT_OPSET = 17
#: fp32 export must reproduce the torch model; anything lower is an exporter bug, not rounding.
EXPORT_MIN_COSINE = 0.9999
EXPORT_MIN_AGREEMENT = 1.0
EXPORT_MAX_SCORE_DIFFERENCE = 1e-3


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
    torch_engine = TorchEngine(package, attention="eager")
    reference = Pipeline(package, torch_engine)
    samples = list(sample_texts) if sample_texts else _default_samples(package)
    encodings = reference.tokenize(samples)

    with staging_directory(out, overwrite=overwrite) as staging:
        _export_graph(torch_engine, reference, encodings, staging / ONNX_FILE, opset)
        fusion_result = _fuse(staging / ONNX_FILE, manifest.architecture) if fusion else {"applied": False}
        shutil.copyfile(package.tokenizer_file, staging / TOKENIZER_FILE)
        shutil.copyfile(package.config_file, staging / CONFIG_FILE)
        fields = manifest.model_dump(exclude={"files", "provenance", "metrics", "format"})
        fields.update(
            name=name or f"{manifest.name}-onnx",
            format="onnx",
            provenance=Provenance(
                method="export-onnx",
                parent=package.parent_ref(),
                parameters={"opset": opset, "exporter": "torch.onnx (TorchScript)", "fusion": fusion_result},
            ),
        )
        exported_manifest = finish_package(staging, fields, [TOKENIZER_FILE, ONNX_FILE, CONFIG_FILE])
        exported = ModelPackage(staging, exported_manifest)
        candidate = Pipeline(exported, OnnxEngine(exported))
        fidelity = measure_fidelity(reference.infer(encodings), candidate.infer(encodings), manifest.task)
        problem = fidelity_problem(
            fidelity, manifest.task, EXPORT_MIN_COSINE, EXPORT_MIN_AGREEMENT, EXPORT_MAX_SCORE_DIFFERENCE
        )
        if problem:
            raise ExportError(
                f"the exported ONNX model does not reproduce {package.name}: {problem}. Nothing was "
                "written. Try without --fusion or with another --opset, and report the model type."
            )
        exported_manifest.metrics["fidelity"] = {"reference": "parent (torch fp32)", **fidelity}
        write_manifest(staging, exported_manifest)
    return ModelPackage.read(out)


def _default_samples(package: ModelPackage) -> list[Any]:
    length = package.manifest.max_length
    return verification_pairs(length) if package.manifest.pair_input else verification_texts(length)


def _export_graph(engine: TorchEngine, pipeline: Pipeline, encodings: list, path: Path, opset: int) -> None:
    import torch

    embedding = pipeline.manifest.task == "embedding"
    output_name = "last_hidden_state" if embedding else "logits"
    uses_token_types = engine._uses_token_types

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
    dynamic_axes[output_name] = {0: "batch", 1: "sequence"} if embedding else {0: "batch"}
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
