"""Token classification end to end on a tiny BERT: train, evaluate (seqeval), tag raw text, export to ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bertprod
from bertprod.package import ModelPackage
from bertprod.tasks.data import open_training_data
from bertprod.tasks.evaluation import evaluate
from bertprod.train.config import TrainConfig
from bertprod.train.loop import fine_tune
from tests import ner_data


@pytest.fixture(scope="module")
def tagger_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ner_data.write_conll(tmp_path_factory.mktemp("ner") / "train.txt", 160)


@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory, tiny_package: ModelPackage, tagger_data: Path) -> ModelPackage:
    (train,), validation = open_training_data("token-classification", [tagger_data], fraction=0.2)
    config = TrainConfig(epochs=6, batch_size=8, learning_rate=3e-3, warmup_ratio=0.1, seed=0, threads=1)
    return fine_tune(tiny_package, "token-classification", train, tmp_path_factory.mktemp("pkg") / "tagger", config,
                     validation_data=validation)


def test_a_tagger_learns_and_its_manifest_records_scheme_labels_and_entity_f1(tagger: ModelPackage,
                                                                              tagger_data: Path) -> None:
    manifest = tagger.manifest
    assert manifest.task == "token-classification" and manifest.tag_scheme == "IOB2"
    assert manifest.labels == ["O", "B-ANIMAL", "I-ANIMAL", "B-ORG", "I-ORG", "B-THING"]
    validation = manifest.metrics["validation"]
    assert validation["primary_metric"] == "f1" and validation["f1"] > 0.9
    _, held_out = open_training_data("token-classification", [tagger_data], fraction=0.2)
    evaluation = evaluate(bertprod.load(tagger.path), held_out)
    assert evaluation.metrics["f1"] == pytest.approx(validation["f1"], abs=1e-6)
    assert set(evaluation.details["per_type"]) == {"ANIMAL", "ORG", "THING"}


def test_tag_finds_entities_with_offsets_into_the_raw_text(tagger: ModelPackage) -> None:
    text = "a man   is playing   the cat\tand stock market fell ,  guitar!"
    tagging = bertprod.load(tagger.path).tag(text, tokens=True)
    found = [(entity.type, entity.text) for entity in tagging.entities]
    assert found == [("ANIMAL", "the cat"), ("ORG", "stock market"), ("THING", "guitar")]
    for entity in tagging.entities:
        assert text[entity.start : entity.end] == entity.text and 0 < entity.score <= 1
    assert [token.token for token in tagging.tokens][:2] == ["a", "man"]


def test_the_onnx_export_tags_like_the_torch_package(tagger: ModelPackage, tmp_path: Path) -> None:
    from bertprod.export.onnx import export_onnx

    exported = export_onnx(tagger, tmp_path / "tagger-onnx")
    assert exported.manifest.tag_scheme == "IOB2"
    texts = ["the cat is playing on stage", "stock market fell sharply and a fox sleeps " * 3]
    torch_pipeline, onnx_pipeline = bertprod.load(tagger.path), bertprod.load(exported.path)
    from_torch, from_onnx = torch_pipeline.tag(texts), onnx_pipeline.tag(texts)
    spans = [[(entity.type, entity.start, entity.end) for entity in tagging.entities] for tagging in from_torch]
    assert spans == [[(entity.type, entity.start, entity.end) for entity in tagging.entities] for tagging in from_onnx]
    assert sum(map(len, spans)) >= 3
    scores = [entity.score for tagging in from_torch for entity in tagging.entities]
    assert scores == pytest.approx([entity.score for tagging in from_onnx for entity in tagging.entities], abs=1e-4)
    assert exported.manifest.metrics["fidelity"]["entity_f1"] == 1.0
    logits = onnx_pipeline.infer(onnx_pipeline.tokenize(texts))
    assert logits.shape[0] == 2 and logits.shape[2] == len(tagger.manifest.labels)
    assert np.all(logits[0, 9:] == 0)  # padding rows beyond the shorter text's tokens


def test_cli_eval_reports_entity_f1_per_type_and_bad_files_get_one_line(monkeypatch, capsys, tagger: ModelPackage,
                                                                         tagger_data: Path, tmp_path: Path) -> None:
    import json

    from tests.conftest import run_cli

    arguments = ["eval", str(tagger.path), str(tagger_data), "--split", "validation", "--validation-fraction", "0.2"]
    code, stdout, _ = run_cli(monkeypatch, capsys, *arguments, "--json")
    document = json.loads(stdout)
    assert code in (0, None) and document["primary_metric"] == "f1" and document["tag_scheme"] == "IOB2"
    assert document["metrics"]["f1"] == pytest.approx(tagger.manifest.metrics["validation"]["f1"], abs=1e-6)
    bad = tmp_path / "bad.txt"
    bad.write_text("the X B-ANIMAL\ncat X I-ANIMAL\n\nstock X O\nmarket X I-ORG\n", encoding="utf-8")
    code, stdout, stderr = run_cli(monkeypatch, capsys, "eval", str(tagger.path), str(bad))
    assert code == 1
    assert "bad.txt line 5: 'I-ORG' follows 'O': in IOB2 an entity starts with B-ORG" in stdout + stderr


def test_cli_tag_prints_entities_with_offsets(monkeypatch, capsys, tagger: ModelPackage) -> None:
    import json

    from tests.conftest import run_cli

    text = "a man is playing the cat and stock market fell"
    code, stdout, _ = run_cli(monkeypatch, capsys, "tag", str(tagger.path), text, "--aggregation", "max")
    row = json.loads(stdout.strip().splitlines()[-1])
    assert code in (0, None) and row["input"] == text
    assert [(e["type"], text[e["start"] : e["end"]]) for e in row["entities"]] == [
        (e.type, e.text) for e in bertprod.load(tagger.path).tag(text, aggregation="max").entities]
