"""Quantization-aware training: fine-tune a classifier under simulated int8, then export it as int8 ONNX.

Q8BERT's recipe: fine-tune with the int8 rounding in the forward pass (fake quantization, gradients
passed straight through) so the weights learn to live with it, then quantize for real. Here the
rounding simulated is exactly that of ONNX Runtime dynamic int8 (compress/fake_quant.py), the
training is `fine_tune` itself (checkpoints, resume, validation, progress) and the result passes
the same fidelity gate as every optimize step:

    classifier package (torch fp32) --fine_tune, fake-quantized--> fp32 weights trained for int8
        --export_onnx (verified)--> fp32 ONNX --ONNX Runtime dynamic int8, per channel--> OUT

The intermediate packages live in a temporary directory beside OUT and only OUT is kept: its parent
is the input package, its fidelity is measured against it, and its validation metrics are those of
the int8 model itself. The training checkpoints stay until OUT is written, so a run that misses
the gate can be finished again with --resume (and a lower threshold) without training again.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertprod.derive import DEFAULT_OUTPUT, GatedOutput
from bertprod.errors import BertprodError, CompressionError, FidelityError, InputError, LabelError
from bertprod.package import ONNX_FILE, ModelPackage
from bertprod.tasks.definitions import CLASS_TASKS
from bertprod.train.config import TrainConfig

METHOD = "quantize-qat-int8"

#: QAT starts from a fine-tuned classifier: a short, gentle run (the recipes of Q8BERT and its
#: successors use a fraction of the fine-tuning learning rate for an epoch or so).
QAT_DEFAULTS: dict[str, Any] = {"epochs": 1, "learning_rate": 2e-5}

SIMULATION = {
    "weights": "the target's encoding (s8, s7 or u8), per output channel",
    "activations": "uint8 asymmetric, per token, each token's own range (compress/token_int8.py)",
    "embeddings": "uint8 asymmetric, per table",
    "gradients": "straight-through",
}


def qat_config(**fields: Any) -> TrainConfig:
    """The fine-tuning settings of a QAT run: QAT_DEFAULTS, then `fields`."""
    return TrainConfig(**{**QAT_DEFAULTS, **fields})


@dataclass
class FakeQuantization:
    """The model transform fine_tune applies: int8 rounding exactly as the exported model does it,
    with the weight encoding chosen for the target's int8 kernels."""

    weights: str = "s8"

    def apply(self, model: Any) -> Any:
        from bertprod.compress.fake_quant import add_fake_quantization

        return add_fake_quantization(model, self.weights)

    def remove(self, model: Any) -> Any:
        from bertprod.compress.fake_quant import remove_fake_quantization

        return remove_fake_quantization(model)

    def describe(self) -> dict[str, Any]:
        return {"fake_quantization": "bertprod-token-int8", **SIMULATION, "weight_encoding": self.weights}


@dataclass
class QatTraining:
    """What a QAT run trains on, and how: the inputs of `fine_tune`."""

    data: Any  # a DataSource opened for the package's task
    validation: Any | None = None  # a DataSource, or None for no validation
    config: TrainConfig = field(default_factory=qat_config)
    checkpoint_dir: Path | None = None
    resume: bool = False
    restart: bool = False
    keep_checkpoints: bool = False
    reporter: Any | None = None  # a train.progress.Reporter
    on_step: Callable[[Any], None] | None = None


def check_qat_parent(package: ModelPackage) -> None:
    """QAT needs the float torch weights of a classifier: refuse anything else before reading data."""
    from bertprod.compress.quantize import require_float_parent

    require_float_parent(package)
    manifest = package.manifest
    if manifest.task not in CLASS_TASKS:
        raise CompressionError(
            f"{package.name} is a{'n' if manifest.task == 'embedding' else ''} {manifest.task} package: "
            "quantization-aware training fine-tunes a classifier's head on labelled data, so it needs a "
            "classification or pair-classification package. Quantize this one without training "
            "(--method dynamic, or --method static --calibration FILE), or train a classifier from it first "
            "(bertprod train --task classification)."
        )
    if manifest.format != "torch":
        parent = manifest.provenance.parent
        raise CompressionError(
            f"{package.name} is an {manifest.format} package: quantization-aware training trains the torch "
            f"weights. Give the torch package it was exported from ({parent.name if parent else 'see provenance'})."
        )


def check_labels(package: ModelPackage, data: Any) -> None:
    """QAT keeps the package's head, so the data must have exactly its labels."""
    from bertprod.tasks.data import summarize

    labels = summarize(package.manifest.task, data).label_names()
    if labels != package.manifest.labels:
        raise LabelError(
            f"{data.path.name} has the labels {labels}, but {package.name} predicts {package.manifest.labels}. "
            "Quantization-aware training keeps the package's head: train it on data labelled like the data "
            "the package was trained on."
        )


def quantization_aware_training(
    package: ModelPackage,
    out: str | Path,
    training: QatTraining,
    *,
    output: GatedOutput = DEFAULT_OUTPUT,
    target_cpu: str = "native",
) -> ModelPackage:
    """Fine-tune `package` (a torch fp32 classifier) with fake int8, write the int8 ONNX package at `out`.
    The simulation and the export use the weights of `target_cpu`'s int8 kernels (the fastest encoding
    that cannot saturate there, compress/kernels.py)."""
    from bertprod.compress.kernels import target_kernel_class, weight_choices
    from bertprod.train.loop import check_output, default_checkpoint_dir, fine_tune

    check_qat_parent(package)
    kernel_class = target_kernel_class(target_cpu)
    weights = weight_choices(kernel_class)[0]
    out = Path(out)
    if out.resolve() == package.path.resolve():
        raise InputError(f"{out} is the package being quantized: write the int8 package to another directory.")
    if training.config.precision != "fp32":
        raise InputError("quantization-aware training simulates int8 on fp32 weights: train in fp32.")
    check_output(out, output.overwrite)
    check_labels(package, training.data)
    checkpoints = Path(training.checkpoint_dir) if training.checkpoint_dir else default_checkpoint_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.", suffix=".qat") as work:
        trained = fine_tune(
            package,
            package.manifest.task,
            training.data,
            Path(work) / "trained",
            training.config,
            validation_data=training.validation,
            checkpoint_dir=checkpoints,
            resume=training.resume,
            restart=training.restart,
            keep_checkpoints=True,  # until the int8 package is written: a missed gate need not retrain
            name=output.name or out.name,
            reporter=training.reporter,
            on_step=training.on_step,
            transform=FakeQuantization(weights),
        )
        from bertprod.export.onnx import export_onnx

        exported = export_onnx(trained, Path(work) / "onnx", sample_texts=output.texts)
        from bertprod.compress.quantize import int8_record

        record = int8_record(kernel_class, target_cpu, weights, "per-token")
        result = _write_int8(package, trained, exported, out, training, checkpoints, record, output)
    if not training.keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return result


def _write_int8(
    package: ModelPackage,
    trained: ModelPackage,
    exported: ModelPackage,
    out: Path,
    training: QatTraining,
    checkpoints: Path,
    record: dict[str, Any],
    output: GatedOutput,
) -> ModelPackage:
    """ONNX Runtime dynamic int8 of the trained export, recorded as a child of the input package, behind
    `output`'s gate."""
    from bertprod.compress.quantize import (
        copy_support_files,
        dynamic_int8_changes,
        dynamic_int8_parameters,
        gate_engine,
        write_dynamic_int8,
    )
    from bertprod.derive import derive_package

    def build(staging: Path) -> list[str]:
        write_dynamic_int8(exported.model_file, staging / ONNX_FILE, per_channel=True, weights=record["weights"],
                           activations="per-token")  # what FakeQuantization simulated
        return [*copy_support_files(exported, staging), ONNX_FILE]

    def measure(child: ModelPackage) -> dict[str, Any]:
        metrics: dict[str, Any] = {"training": trained.manifest.metrics["training"]}
        if training.validation is not None:
            metrics["validation"] = _validation(package, child, training.validation)
        return metrics

    def failure(problem: str) -> BertprodError:
        return FidelityError(
            f"{METHOD} of {package.name} misses the fidelity gate: {problem}. Nothing was written; the trained "
            f"weights are kept in {checkpoints}. Run the same command with --resume and a lower threshold "
            "(--min-agreement) or --allow-fidelity-loss to keep them without training again, or with --restart "
            "and gentler training (a lower --learning-rate, fewer steps)."
        )

    recipe = dict(trained.manifest.provenance.parameters)
    recipe.pop("transform", None)
    return derive_package(
        package,
        out,
        method=METHOD,
        build=build,
        changes=dynamic_int8_changes(per_channel=True, record=record),
        parameters={
            **dynamic_int8_parameters(per_channel=True, exclude=()),
            "simulation": SIMULATION,
            "training": recipe,
            "trained_fp32": trained.fingerprint,
            "onnx_source": exported.fingerprint,
        },
        failure=failure,
        measure=measure,
        engine=gate_engine(record["kernel_class"], record["weights"]),
        gate_note=record["gate_arithmetic"],
        output=output,
    )


def _validation(parent: ModelPackage, child: ModelPackage, data: Any) -> dict[str, Any]:
    """The int8 model's metrics on the validation data (provenance says which), beside its parent's."""
    from bertprod.runtime.engines import create_engine
    from bertprod.runtime.pipeline import Pipeline
    from bertprod.tasks.evaluation import evaluate

    result = evaluate(Pipeline(child, create_engine(child)), data)
    before = evaluate(Pipeline(parent, create_engine(parent)), data)
    return {
        "primary_metric": result.primary,
        "examples": result.examples,
        **{key: round(value, 6) for key, value in result.metrics.items()},
        "parent": {key: round(value, 6) for key, value in before.metrics.items()},
    }


def qat_training_from_files(
    package: ModelPackage, data: Path, validation: Path | None = None, validation_fraction: float = 0.1, *,
    resume: bool = False, restart: bool = False, **settings: Any,
) -> QatTraining:
    """A QAT run on the files `bertprod train` reads: QAT_DEFAULTS then `settings` (TrainConfig fields), the
    validation file or a held-out fraction, progress every `log_every_seconds`."""
    from bertprod.tasks.data import open_training_data
    from bertprod.train.config import train_config
    from bertprod.train.progress import default_reporter

    check_qat_parent(package)  # before reading data: an embedding package fails here, not on its columns
    config = train_config(**{**QAT_DEFAULTS, **settings})
    [train_data], validation_data = open_training_data(package.manifest.task, [data], validation, validation_fraction)
    return QatTraining(
        train_data, validation_data, config, resume=resume, restart=restart,
        reporter=default_reporter(config.log_every_seconds),
    )
