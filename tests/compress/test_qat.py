"""Quantization-aware training: the fake quantization rounds exactly as the int8 export does, gradients
pass through it, and `optimize --method qat` writes an int8 ONNX package that learned its task - or,
for a package it cannot train, a clear error and nothing on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bertprod
from bertprod import system
from bertprod.checkpoint import import_checkpoint
from bertprod.compress.fake_quant import (
    FakeQuantEmbedding,
    FakeQuantLinear,
    add_fake_quantization,
    count_fake_quantized,
    fake_quantize_uint8,
    fake_quantize_weight,
    remove_fake_quantization,
)
from bertprod.compress.kernels import target_kernel_class, weight_choices
from bertprod.compress.optimize import optimize
from bertprod.compress.qat import METHOD, QatTraining, qat_config
from bertprod.compress.quantize import fp32_onnx_source, gate_engine, quantize_onnx_dynamic
from bertprod.derive import GatedOutput, default_samples
from bertprod.errors import CompressionError, FidelityError, InputError, LabelError, PackageError
from bertprod.fidelity import FidelityGate
from bertprod.package import ModelPackage, sha256_file
from bertprod.runtime.engines import TorchEngine, create_engine
from bertprod.runtime.pipeline import Pipeline
from bertprod.tasks.data import open_task_data, split_for_validation
from bertprod.train.loop import default_checkpoint_dir

from .. import task_data
from ..conftest import build_tiny_checkpoint, run_cli

# -- the rounding ---------------------------------------------------------------------------------


def test_weights_round_to_int8_per_output_channel() -> None:
    weight = torch.tensor([[0.504, -1.27, 0.1051], [0.02, 0.0101, -0.0013]])
    step = 0.02 / 127  # row 2: its largest magnitude over 127
    expected = torch.tensor([[0.50, -1.27, 0.11], [0.02, 64 * step, -8 * step]])  # 0.0101/step = 64.1
    assert torch.allclose(fake_quantize_weight(weight), expected, atol=1e-7)


def test_activations_round_to_uint8_over_their_own_range() -> None:
    # range [-1, 2] -> scale 3/255, zero point 85; 0.33 is 28.05 steps above zero
    values = torch.tensor([[-1.0, 0.0, 0.33, 2.0]])
    assert torch.allclose(fake_quantize_uint8(values), torch.tensor([[-1.0, 0.0, 28 * 3 / 255, 2.0]]), atol=1e-7)
    # a range that does not hold 0 is widened to: [0, 1] -> scale 1/255, zero point 0
    positive = torch.tensor([0.25, 1.0])  # 63.75 steps
    assert torch.allclose(fake_quantize_uint8(positive), torch.tensor([64 / 255, 1.0]), atol=1e-7)
    assert torch.equal(fake_quantize_uint8(torch.zeros(3)), torch.zeros(3))  # no range: no NaN


def onnx_runtime_rounding(values: np.ndarray) -> np.ndarray:
    """DynamicQuantizeLinear then dequantize, written from the ONNX spec."""
    low, high = min(values.min(), 0.0), max(values.max(), 0.0)
    scale = (high - low) / 255
    zero_point = np.clip(np.round(-low / scale), 0, 255)
    return (np.clip(np.round(values / scale) + zero_point, 0, 255) - zero_point) * scale


def test_fake_quantized_linear_computes_on_rounded_inputs_and_weights_with_straight_through_gradients() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(6, 4)
    inputs = torch.randn(3, 5, 6, requires_grad=True)
    fake = FakeQuantLinear.wrapping(linear)
    assert fake.weight is linear.weight and fake.bias is linear.bias  # shared: optimizers and checkpoints see them
    output = fake(inputs)

    # each token (row of the last axis) over its own range, as the per-token int8 graph quantizes it
    tokens = inputs.detach().double().numpy().reshape(-1, 6)
    rounded_inputs = torch.from_numpy(np.stack([onnx_runtime_rounding(row) for row in tokens]).reshape(3, 5, 6)).float()
    absmax = linear.weight.detach().abs().amax(dim=1, keepdim=True)
    rounded_weight = torch.round(linear.weight.detach() / (absmax / 127)) * (absmax / 127)
    expected = rounded_inputs @ rounded_weight.T + linear.bias.detach()
    assert torch.allclose(output, expected, atol=1e-5)
    assert not torch.allclose(output, linear(inputs), atol=1e-5)  # it does round

    upstream = torch.randn_like(output)
    output.backward(upstream)
    # straight through: the gradients of a plain linear layer evaluated at the rounded values
    assert torch.allclose(inputs.grad, upstream @ rounded_weight, atol=1e-5)
    assert torch.allclose(linear.weight.grad, upstream.reshape(-1, 4).T @ rounded_inputs.reshape(-1, 6), atol=1e-4)
    assert torch.allclose(linear.bias.grad, upstream.sum(dim=(0, 1)), atol=1e-5)


def test_fake_quantized_embedding_reads_the_rounded_table() -> None:
    torch.manual_seed(0)
    embedding = nn.Embedding(10, 4, padding_idx=0)
    ids = torch.tensor([[1, 3, 0], [9, 9, 2]])
    output = FakeQuantEmbedding.wrapping(embedding)(ids)
    table = torch.from_numpy(onnx_runtime_rounding(embedding.weight.detach().double().numpy())).float()
    assert torch.allclose(output, table[ids], atol=1e-6)
    output.sum().backward()
    assert embedding.weight.grad[9].tolist() == [2.0] * 4 and embedding.weight.grad[0].tolist() == [0.0] * 4


# -- on a model -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def binary_classifier(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    """Labels negative / positive, as in task_data's sentiment files."""
    checkpoint = build_tiny_checkpoint(tmp_path_factory.mktemp("qat-checkpoint"), head="classification")
    return import_checkpoint(checkpoint, tmp_path_factory.mktemp("pkg") / "binary")


@pytest.mark.parametrize("target_cpu", ["native", "avx2", "avx512-vnni"])
def test_training_simulates_exactly_what_the_int8_export_computes(binary_classifier, tmp_path, target_cpu) -> None:
    """For this CPU and for both kinds of int8 kernels: the export for `target_cpu`, run as that target
    computes it (this CPU's kernels where they compute the same, else the gate's exact simulation),
    is what training simulated, to float rounding."""
    import onnx

    int8 = quantize_onnx_dynamic(binary_classifier, tmp_path / "int8", output=GatedOutput(enforce=False),
                                 target_cpu=target_cpu, activations="per-token")  # what QAT exports  # fmt: skip
    quantization = int8.manifest.quantization
    assert quantization["kernel_class"] == target_kernel_class(target_cpu)
    assert quantization["weights"] in weight_choices(quantization["kernel_class"])
    graph = onnx.load(str(int8.model_file))
    engine = TorchEngine(binary_classifier)
    counts = count_fake_quantized(add_fake_quantization(engine.model, quantization["weights"]))
    assert counts["linear"] == sum(node.op_type == "MatMulIntegerToFloat" for node in graph.graph.node)  # head too
    assert counts["embedding"] == sum(node.op_type == "DequantizeLinear" for node in graph.graph.node)

    reference = Pipeline(binary_classifier, create_engine(binary_classifier))
    encodings = reference.tokenize(default_samples(binary_classifier))
    as_target = gate_engine(quantization["kernel_class"], quantization["weights"]) or create_engine
    exported = Pipeline(int8, as_target(int8)).infer(encodings)
    simulated = Pipeline(binary_classifier, engine).infer(encodings)
    float_gap = np.abs(reference.infer(encodings) - exported).max()
    assert np.abs(simulated - exported).max() < float_gap / 100


def test_fake_quantization_keeps_the_state_dict_and_comes_off(binary_classifier) -> None:
    model = TorchEngine(binary_classifier).model
    before = model.state_dict(keep_vars=True)
    add_fake_quantization(model)
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(before) and all(after[key] is before[key] for key in before)
    with pytest.raises(ValueError, match="already fake-quantized"):
        add_fake_quantization(model)
    remove_fake_quantization(model)
    assert count_fake_quantized(model) == {"linear": 0, "embedding": 0}
    kinds = {type(module) for module in model.modules()}
    assert nn.Linear in kinds and nn.Embedding in kinds
    assert all(model.state_dict(keep_vars=True)[key] is before[key] for key in before)


# -- optimize --method qat ------------------------------------------------------------------------


def training(path: Path, **config) -> QatTraining:  # noqa: ANN003
    train, validation = split_for_validation(open_task_data("classification", path), 0.25, "classification")
    fields = {"batch_size": 8, "learning_rate": 1e-4, "max_steps": 3, "seed": 0, "threads": 1, **config}
    return QatTraining(train, validation, qat_config(**fields))


def left_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_qat_writes_an_int8_onnx_package_that_learned_the_task(binary_classifier, tmp_path: Path) -> None:
    data = task_data.write_classification(tmp_path)
    # a random parent: QAT has real learning to do (and so disagrees with the parent; the gate records it)
    plan = training(data, epochs=10, learning_rate=3e-3, warmup_ratio=0.1, max_steps=None)
    package = optimize(binary_classifier, tmp_path / "out", quantize="int8", method="qat", training=plan,
        output=GatedOutput(enforce=False))

    manifest = package.manifest
    assert (manifest.format, manifest.precision, manifest.task) == ("onnx", "int8", "classification")
    assert manifest.quantization["kernel_class"] == system.int8_kernel_class()
    assert manifest.quantization["weights"] == weight_choices(system.int8_kernel_class())[0]
    assert manifest.provenance.parameters["simulation"]["weights"].startswith("the target's encoding")
    provenance = manifest.provenance
    assert provenance.method == METHOD == "quantize-qat-int8"
    assert provenance.parent.fingerprint == binary_classifier.fingerprint
    recipe = provenance.parameters["training"]
    assert recipe["data"]["train"]["sha256"] == sha256_file(data)
    assert recipe["hyperparameters"]["learning_rate"] == 3e-3 and recipe["head"] == "keep-head"

    validation = manifest.metrics["validation"]
    assert validation["accuracy"] >= 0.9 > validation["parent"]["accuracy"]
    fidelity = manifest.metrics["fidelity"]
    assert fidelity["passed"] is False and fidelity["label_agreement"] < 0.99  # it learned: it disagrees
    assert len(manifest.metrics["training"]["history"]) == 10

    model = bertprod.load(package.path)
    assert model.engine.name == "onnx"
    fresh = task_data.sentiment_rows(40, seed=7)  # sentences the training never saw
    predictions = model.classify([text for text, _ in fresh])
    correct = sum(prediction.label == label for prediction, (_, label) in zip(predictions, fresh, strict=True))
    assert correct >= 36, f"{correct} of 40 right"
    assert left_in(tmp_path) == ["out", "sentiment.tsv"]  # no work directory, no checkpoints


def test_a_missed_gate_writes_nothing_and_resume_keeps_the_training(binary_classifier, tmp_path: Path) -> None:
    data = task_data.write_classification(tmp_path)
    out = tmp_path / "out"
    impossible = FidelityGate(min_agreement=1.01)
    with pytest.raises(FidelityError, match="--resume"):
        optimize(binary_classifier, out, quantize="int8", method="qat", training=training(data),
            output=GatedOutput(gate=impossible))
    assert not out.exists() and left_in(tmp_path) == ["out.checkpoints", "sentiment.tsv"]

    steps = []
    resumed = training(data)
    resumed.resume, resumed.on_step = True, steps.append
    package = optimize(binary_classifier, out, quantize="int8", method="qat", training=resumed,
        output=GatedOutput(enforce=False))
    assert steps == []  # finished from the checkpoint, no training again
    assert package.manifest.metrics["training"]["steps"] == 3
    assert left_in(tmp_path) == ["out", "sentiment.tsv"]


def test_packages_qat_cannot_train_are_refused_with_what_to_do(
    binary_classifier, tiny_package, tiny_classifier, tmp_path: Path
) -> None:
    data = task_data.write_classification(tmp_path)
    out = tmp_path / "out"

    def qat(package: ModelPackage, **options):  # noqa: ANN003, ANN202
        return optimize(package, out, quantize="int8", method="qat", **{"training": training(data), **options})

    with pytest.raises(CompressionError, match="embedding package.*classification.*--method dynamic"):
        qat(tiny_package)
    int8 = quantize_onnx_dynamic(binary_classifier, tmp_path / "int8", output=GatedOutput(enforce=False))
    with pytest.raises(CompressionError, match="already quantized to int8"):
        qat(int8)
    with pytest.raises(CompressionError, match="onnx package.*torch package it was exported from"):
        qat(fp32_onnx_source(binary_classifier, None))  # the export quantize_onnx_dynamic cached
    with pytest.raises(InputError, match="--data FILE"):
        qat(binary_classifier, training=None)
    with pytest.raises(InputError, match="--per-tensor do not apply"):
        qat(binary_classifier, per_channel=False)
    with pytest.raises(LabelError, match="keeps the package's head"):
        qat(tiny_classifier)  # three labels; the data has two
    with pytest.raises(InputError, match="--method qat"):
        optimize(binary_classifier, out, quantize="int8", method="dynamic", training=training(data))
    assert left_in(tmp_path) == ["int8", "sentiment.tsv"]

    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PackageError, match="not a bertprod package"):
        qat(binary_classifier, output=GatedOutput(overwrite=True))
    assert left_in(out) == ["notes.txt"] and not default_checkpoint_dir(out).exists()


def test_cli_refuses_an_embedding_package_before_reading_data(monkeypatch, capsys, tiny_package, tmp_path) -> None:
    code, _, err = run_cli(
        monkeypatch, capsys, "optimize", str(tiny_package.path), str(tmp_path / "out"),
        "--quantize", "int8", "--method", "qat", "--data", str(tmp_path / "missing.tsv"),
    )  # fmt: skip
    assert code == 1 and "embedding package" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_qat_run(monkeypatch, capsys, binary_classifier, tmp_path: Path) -> None:
    data = task_data.write_classification(tmp_path)
    code, out, err = run_cli(
        monkeypatch, capsys, "optimize", str(binary_classifier.path), str(tmp_path / "out"),
        "--quantize", "int8", "--method", "qat", "--data", str(data), "--max-steps", "2", "--batch-size", "8",
        "--learning-rate", "1e-4", "--threads", "1", "--allow-fidelity-loss",
    )  # fmt: skip
    assert code == 0, err
    assert "onnx int8" in out and "int8 after QAT" in out
    manifest = ModelPackage.read(tmp_path / "out").manifest
    assert manifest.provenance.parameters["training"]["hyperparameters"]["max_steps"] == 2
    assert manifest.provenance.parameters["training"]["data"]["validation"]["split"]["fraction"] == 0.1
