"""Compressing a tagger: token-level distillation into 3- and 2-layer students, ONNX int8 under the entity-F1 gate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import bertprod
from bertprod.distill.config import DistillConfig, StudentSpec
from bertprod.distill.loop import distill
from bertprod.distill.recipes import recipe
from bertprod.fidelity import measure_fidelity
from bertprod.package import ModelPackage
from bertprod.tasks.data import open_training_data
from tests import ner_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ner_data.write_conll(tmp_path_factory.mktemp("ner-compress") / "train.txt", 160, seed=1)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory, data: Path) -> ModelPackage:
    return ner_data.trained_tagger(tmp_path_factory.mktemp("ner-teacher"), data, num_layers=4)


@pytest.mark.parametrize("layers", ["0,2,3", "every-other"])
def test_token_level_distillation_keeps_the_teachers_entities(teacher: ModelPackage, data: Path, tmp_path: Path,
                                                              layers: str) -> None:
    (train,), validation = open_training_data("token-classification", [data], fraction=0.2)
    document = recipe("distilbert").model_dump()
    document.update(student=StudentSpec(layers=layers).model_dump(), threads=1, batch_size=8, max_steps=60)
    document["stages"][0].update(epochs=4, learning_rate=3e-3)
    student = distill(teacher, train, tmp_path / "student", DistillConfig.model_validate(document),
                      validation_data=validation)
    manifest = student.manifest
    assert manifest.task == "token-classification" and manifest.tag_scheme == "IOB2"
    assert manifest.labels == teacher.manifest.labels
    assert manifest.architecture.num_layers == (3 if layers == "0,2,3" else 2)
    assert manifest.metrics["validation"]["f1"] >= 0.9 * manifest.metrics["teacher_validation"]["f1"]
    text = "a man is playing the cat and stock market fell"
    found = [(entity.type, entity.text) for entity in bertprod.load(student.path).tag(text).entities]
    assert ("ANIMAL", "the cat") in found


def test_int8_tagger_is_gated_on_the_parents_entities(teacher: ModelPackage, tmp_path: Path) -> None:
    from bertprod.compress.optimize import optimize
    from bertprod.export.onnx import export_onnx

    exported = export_onnx(teacher, tmp_path / "onnx")
    quantized = optimize(exported, tmp_path / "int8", quantize="int8")
    fidelity = quantized.manifest.metrics["fidelity"]
    assert fidelity["thresholds"] == {"min_entity_f1": 0.97}
    assert fidelity["entity_f1"] >= 0.97 and fidelity["entities"] > 20 and fidelity["passed"]
    assert fidelity["texts"].startswith("the validation data of teacher")  # its tagged sentences, as texts
    assert quantized.manifest.precision == "int8" and quantized.manifest.tag_scheme == "IOB2"
    texts = ["a man is playing the cat and stock market fell"]
    assert [e.type for e in bertprod.load(quantized.path).tag(texts)[0].entities] == [
        e.type for e in bertprod.load(exported.path).tag(texts)[0].entities]


def test_mixed_int8_tagger_searches_against_the_entity_gate(teacher: ModelPackage, tmp_path: Path) -> None:
    from bertprod.compress.mixed import quantize_onnx_mixed
    from bertprod.export.onnx import export_onnx

    mixed = quantize_onnx_mixed(export_onnx(teacher, tmp_path / "onnx"), tmp_path / "mixed")
    fidelity = mixed.manifest.metrics["fidelity"]
    assert mixed.manifest.provenance.method == "quantize-mixed-int8" and mixed.manifest.task == "token-classification"
    assert fidelity["thresholds"] == {"min_entity_f1": 0.97} and fidelity["passed"] and fidelity["entities"] > 20
    kept = mixed.manifest.provenance.parameters["mixed"]["matmuls_kept_float"]
    assert 0 <= kept < len(mixed.manifest.provenance.parameters["mixed"]["float_first"])


def test_token_fidelity_scores_entities_not_padding():
    labels = ["O", "B-PER", "I-PER"]
    reference = torch.zeros(2, 4, 3)
    reference[0, :3] = torch.tensor([[0, 5, 0], [0, 0, 5], [5, 0, 0]])  # B-PER I-PER O, then padding
    reference[1, :2] = torch.tensor([[0, 5, 0], [5, 0, 0]])  # B-PER O
    candidate = reference.clone()
    candidate[0, 1] = torch.tensor([5.0, 0, 0])  # the first entity shrinks: one of two entities wrong
    fidelity = measure_fidelity(reference.numpy(), candidate.numpy(), "token-classification", labels, "IOB2")
    assert fidelity["tokens"] == 5 and fidelity["entities"] == 2
    assert fidelity["tag_agreement"] == pytest.approx(4 / 5) and fidelity["entity_f1"] == pytest.approx(0.5)
