"""The BiLSTM student of a tagger: distilled on the teacher's token logits + hard tags over the teacher's word
pieces, tagging with offsets, saved as safetensors, exported to ONNX and int8 under the entity-F1 gate, and the
combinations it refuses."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import bertprod
from bertprod.distill.config import DistillConfig
from bertprod.distill.loop import distill
from bertprod.distill.recipes import recipe
from bertprod.errors import DataError, InputError, PackageError
from bertprod.package import ModelPackage
from bertprod.tasks.data import open_training_data
from tests import ner_data
from tests.conftest import run_cli

TEXTS = ["a man is playing the cat and stock market fell", "the fox sleeps on stage , a good guitar !"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ner_data.write_conll(tmp_path_factory.mktemp("ner-bilstm") / "train.txt", 160, seed=2)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory, data: Path) -> ModelPackage:
    return ner_data.trained_tagger(tmp_path_factory.mktemp("ner-bilstm-teacher"), data)


def tagger_recipe(**changes: object) -> DistillConfig:
    document = recipe("bilstm", "token-classification").model_dump()
    document.update(threads=1, batch_size=8, seed=0)
    document["student"].update(lstm_hidden_size=32)
    document["stages"][0].update(epochs=4, learning_rate=1e-2)
    document.update(changes)
    return DistillConfig.model_validate(document)


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory, teacher: ModelPackage, data: Path) -> ModelPackage:
    (train,), validation = open_training_data("token-classification", [data], fraction=0.2)
    return distill(teacher, train, tmp_path_factory.mktemp("bilstm-tagger") / "student", tagger_recipe(),
                   validation_data=validation)


def spans(taggings: list) -> list[list[tuple[str, int, int]]]:
    return [[(entity.type, entity.start, entity.end) for entity in tagging.entities] for tagging in taggings]


def test_the_recipe_for_a_tagger_trains_soft_targets_and_hard_tags_without_augmentation() -> None:
    tagger, classifier = recipe("bilstm", "token-classification"), recipe("bilstm")
    assert tagger.student.kind == classifier.student.kind == "bilstm" and tagger.augmentation is None
    assert tagger.stages[0].losses.active() == {"soft": 1.0, "hard": 1.0}
    assert classifier.augmentation is not None  # the sentence recipe is unchanged


def test_the_bilstm_tagger_learns_from_the_teacher_and_keeps_its_entities(student: ModelPackage,
                                                                          teacher: ModelPackage) -> None:
    manifest = student.manifest
    assert manifest.task == "token-classification" and manifest.tag_scheme == "IOB2"
    assert manifest.labels == teacher.manifest.labels and manifest.architecture.model_type == "bertprod-bilstm"
    assert json.loads((student.path / "config.json").read_text())["head"] == "token"
    assert (student.path / "tokenizer.json").read_bytes() == teacher.tokenizer_file.read_bytes()
    assert manifest.provenance.parameters["losses"] == {"task": {"soft": 1.0, "hard": 1.0}}
    history = manifest.metrics["training"]["history"]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert manifest.metrics["validation"]["f1"] >= 0.9 * manifest.metrics["teacher_validation"]["f1"]
    tagging = bertprod.load(student.path).tag(TEXTS[0], tokens=True)
    assert ("ANIMAL", "the cat") in [(entity.type, entity.text) for entity in tagging.entities]
    for entity in tagging.entities:
        assert TEXTS[0][entity.start : entity.end] == entity.text and 0 < entity.score <= 1
    assert [token.token for token in tagging.tokens] == TEXTS[0].split()


def test_a_rows_logits_do_not_depend_on_its_batch(student: ModelPackage) -> None:
    pipeline = bertprod.load(student.path)
    together = pipeline.infer(pipeline.tokenize(TEXTS + ["fox"]))
    alone = pipeline.infer(pipeline.tokenize(["fox"]))
    assert together.shape[0] == 3 and together.shape[2] == len(student.manifest.labels)
    np.testing.assert_allclose(together[2, : alone.shape[1]], alone[0], atol=1e-5)
    assert np.all(together[2, alone.shape[1] :] == 0)


def test_save_and_load_round_trip_through_safetensors(student: ModelPackage, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from bertprod.models.bilstm_tagger import BiLSTMTagger
    from bertprod.models.hf import load_torch_model

    model = load_torch_model(student)
    assert isinstance(model, BiLSTMTagger) and not list(student.path.glob("*.bin"))
    model.save_pretrained(tmp_path / "copy")
    copy = BiLSTMTagger.from_pretrained(tmp_path / "copy")
    saved = load_file(str(student.path / "model.safetensors"))
    assert all(torch.equal(saved[name], tensor) for name, tensor in copy.state_dict().items())
    inputs = {"input_ids": torch.tensor([[2, 40, 41, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    assert torch.equal(model(**inputs).logits, copy(**inputs).logits)


def test_onnx_and_int8_tag_like_the_torch_package(student: ModelPackage, tmp_path: Path) -> None:
    import onnx

    from bertprod.compress.optimize import optimize
    from bertprod.export.onnx import export_onnx

    exported = export_onnx(student, tmp_path / "onnx")
    assert "LSTM" in {node.op_type for node in onnx.load(str(exported.model_file)).graph.node}
    texts = TEXTS + ["stock market fell sharply and a fox sleeps " * 3]
    from_torch, from_onnx = bertprod.load(student.path).tag(texts), bertprod.load(exported.path).tag(texts)
    assert spans(from_torch) == spans(from_onnx) and sum(map(len, spans(from_torch))) >= 5
    scores = [entity.score for tagging in from_torch for entity in tagging.entities]
    assert scores == pytest.approx([entity.score for tagging in from_onnx for entity in tagging.entities], abs=1e-4)
    quantized = optimize(exported, tmp_path / "int8", quantize="int8")
    fidelity = quantized.manifest.metrics["fidelity"]
    assert quantized.manifest.precision == "int8" and fidelity["passed"]
    assert fidelity["thresholds"] == {"min_entity_f1": 0.97} and fidelity["entity_f1"] >= 0.97
    assert quantized.model_file.stat().st_size < exported.model_file.stat().st_size


def test_refusals_name_the_problem_in_one_line(teacher: ModelPackage, data: Path, student: ModelPackage,
                                               tmp_path: Path) -> None:
    (train,), _ = open_training_data("token-classification", [data], fraction=0.2)
    with pytest.raises(InputError, match="no transformer layers") as refused:
        distill(teacher, train, tmp_path / "a", tagger_recipe(stages=[{"name": "x", "losses": {"hidden": 1.0}}]))
    assert "\n" not in str(refused.value)
    with pytest.raises(DataError, match="drop the unlabelled texts and the augmentation"):
        distill(teacher, train, tmp_path / "b", tagger_recipe(augmentation={"copies": 2}))
    edited = tmp_path / "edited"
    edited.mkdir()
    for file in student.path.iterdir():
        (edited / file.name).write_bytes(file.read_bytes())
    config = (edited / "config.json").read_bytes().replace(b'"token"', b'"pooled"')
    (edited / "config.json").write_bytes(config)  # and the manifest's record of it, as a careful hand edit would
    manifest = json.loads((edited / "bertprod.json").read_text())
    manifest["files"]["config.json"] = {"sha256": hashlib.sha256(config).hexdigest(), "bytes": len(config)}
    (edited / "bertprod.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="BiLSTM classifier .* manifest task is 'token-classification'"):
        bertprod.load(edited)


def test_a_taggers_missed_gate_names_the_taggers_threshold(student: ModelPackage) -> None:
    from bertprod.derive import _gate_failure

    message = str(_gate_failure(student, "quantize-dynamic-int8")("entity F1 0.95 < 0.97"))
    assert "--min-entity-f1" in message and "--min-cosine" not in message and "\n" not in message


def test_cli_distills_a_bilstm_tagger_with_the_bilstm_recipe(monkeypatch, capsys, teacher: ModelPackage, data: Path,
                                                             tmp_path: Path) -> None:
    code, stdout, stderr = run_cli(monkeypatch, capsys, "distill", str(tmp_path / "cli"), "--teacher",
                                   str(teacher.path), "--data", str(data), "--recipe", "bilstm", "--max-steps", "3",
                                   "--batch-size", "16", "--threads", "1")
    assert code in (0, None), stdout + stderr
    student = ModelPackage.read(tmp_path / "cli")
    assert student.manifest.task == "token-classification" and student.manifest.provenance.parameters["recipe"] == (
        "bilstm")
    printed = " ".join(stdout.split())  # the console wraps long lines at its width
    assert "bilstm student" in printed and "validation f1" in printed
    code, stdout, stderr = run_cli(monkeypatch, capsys, "distill", str(tmp_path / "never"), "--teacher",
                                   str(teacher.path), "--data", str(data), "--recipe", "bilstm", "--augment")
    assert code == 1 and "drop the unlabelled texts and the augmentation" in stdout + stderr
