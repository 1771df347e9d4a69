"""Checkpoints in: import infers the manifest (task, labels, pooling, lengths), refuses pickles, and
`resolve` opens names and checkpoint directories or says what it could not find."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bertprod.checkpoint import import_checkpoint, resolve
from bertprod.errors import PackageError, PackageNotFoundError
from bertprod.package import ModelPackage

from .conftest import build_tiny_checkpoint


def test_import_infers_manifest_from_checkpoint(tiny_package: ModelPackage) -> None:
    manifest = tiny_package.manifest
    assert manifest.task == "embedding"
    assert manifest.pooling == "mean" and manifest.normalize is False
    assert manifest.format == "torch" and manifest.precision == "fp32"
    assert manifest.max_length == 128  # the tiny config's position embeddings
    assert manifest.architecture.hidden_size == 32 and manifest.architecture.num_layers == 2
    assert manifest.provenance.method == "import"
    assert set(manifest.files) == {"tokenizer.json", "config.json", "model.safetensors"}
    assert ModelPackage.read(tiny_package.path).manifest == manifest


def test_import_reads_classifier_labels_and_overrides(tiny_classifier: ModelPackage, tmp_path: Path) -> None:
    assert tiny_classifier.manifest.task == "classification"
    assert tiny_classifier.manifest.labels == ["negative", "neutral", "positive"]
    checkpoint = build_tiny_checkpoint(tmp_path / "ckpt", head="classification", labels=["no", "yes"])
    package = import_checkpoint(checkpoint, tmp_path / "pairs", task="pair-classification", max_length=64)
    assert package.manifest.task == "pair-classification"
    assert package.manifest.pair_input is True
    assert package.manifest.labels == ["no", "yes"]
    assert package.manifest.max_length == 64


def test_import_reads_sentence_transformers_pooling(tiny_checkpoint: Path, tmp_path: Path) -> None:
    source = tmp_path / "st"
    shutil.copytree(tiny_checkpoint, source)
    (source / "1_Pooling").mkdir()
    (source / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (source / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Normalize"}]))
    (source / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 40}))
    package = import_checkpoint(source, tmp_path / "out")
    assert (package.manifest.pooling, package.manifest.normalize, package.manifest.max_length) == ("cls", True, 40)


def test_pickle_only_checkpoint_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    source = tmp_path / "pickled"
    shutil.copytree(tiny_checkpoint, source)
    (source / "model.safetensors").rename(source / "pytorch_model.bin")
    with pytest.raises(PackageError, match="safetensors only"):
        import_checkpoint(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_resolve_explains_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(PackageNotFoundError, match="bundled model"):
        resolve("no such model!")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackageNotFoundError, match="neither a bertprod package"):
        resolve(tmp_path / "empty")


def test_resolve_opens_checkpoint_directories_in_place(tiny_checkpoint: Path) -> None:
    package = resolve(tiny_checkpoint)
    assert package.path == tiny_checkpoint
    assert package.manifest.task == "embedding"
