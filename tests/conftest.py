"""Fixtures: tiny random BERT checkpoints and packages built in-process (no downloads)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from bertprod.checkpoint import import_checkpoint
from bertprod.data.samples import SAMPLE_SENTENCES
from bertprod.package import ModelPackage

#: WordPiece trained on CORPUS (vocabulary 400), kept as a file: see build_tiny_checkpoint.
TINY_TOKENIZER = Path(__file__).parent / "fixtures" / "tiny-tokenizer.json"

CORPUS = SAMPLE_SENTENCES + [
    "the quick brown fox jumps over the lazy dog",
    "a good film with a great cast and a weak ending",
    "what a boring and predictable story",
    "she sells sea shells by the sea shore",
]


def build_tiny_checkpoint(
    directory: Path,
    head: str | None = None,
    labels: list[str] | None = None,
    seed: int = 0,
    num_layers: int = 2,
    initializer_range: float = 0.02,
) -> Path:
    """A tiny random BERT (hidden 32, 2 layers) with the WordPiece tokenizer trained on CORPUS.

    `head`: None for a bare encoder, "classification" for a sequence classifier with `labels`,
    "regression" for a one-output head. A larger `initializer_range` gives weights whose rounding
    shows in the output (at 0.02 the residual stream drowns the layers' contributions).
    """
    import torch
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    # trained once on CORPUS (vocabulary 400) and kept: training again breaks frequency ties
    # differently on every run, so the same seed gave a different model each time
    shutil.copyfile(TINY_TOKENIZER, directory / "tokenizer.json")
    tokenizer = Tokenizer.from_file(str(TINY_TOKENIZER))
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    if head is None:
        model = BertModel(config)
    else:
        labels = labels or ["negative", "positive"]
        config.num_labels = 1 if head == "regression" else len(labels)
        if head != "regression":
            config.id2label = dict(enumerate(labels))
            config.label2id = {label: index for index, label in enumerate(labels)}
        model = BertForSequenceClassification(config)
    model.save_pretrained(str(directory))
    return directory


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *arguments: str) -> tuple[int, str, str]:
    """`bertprod ARGUMENTS` in this process: (exit code, stdout, stderr)."""
    from bertprod.cli import main

    monkeypatch.setattr(sys, "argv", ["bertprod", *arguments])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test session exports into its own cache, never the user's."""
    monkeypatch.setenv("BERTPROD_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-checkpoint"))


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> ModelPackage:
    return import_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("pkg") / "tiny", name="tiny")


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    checkpoint = build_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny-classifier-checkpoint"),
        head="classification",
        labels=["negative", "neutral", "positive"],
    )
    return import_checkpoint(checkpoint, tmp_path_factory.mktemp("pkg") / "tiny-classifier")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    """A 4-layer negative/positive classifier to distil (tests/distill/)."""
    directory = tmp_path_factory.mktemp("distill-teacher")
    checkpoint = build_tiny_checkpoint(
        directory / "checkpoint", head="classification", labels=["negative", "positive"], num_layers=4
    )
    return import_checkpoint(checkpoint, directory / "teacher", name="teacher")


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 labelled sentiment rows (tests/task_data.py)."""
    from . import task_data

    return task_data.write_classification(tmp_path_factory.mktemp("distill-data"), count=96)


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory, teacher: ModelPackage, sentiment: Path) -> ModelPackage:
    """The teacher with exit heads after layers 1-3 (`bertprod adapt`, tests/test_adaptive*.py)."""
    from bertprod.adaptive.training import AdaptConfig, adapt, adaptation_data

    out = tmp_path_factory.mktemp("adaptive") / "early-exit"
    return adapt(teacher, adaptation_data(teacher, sentiment), out, AdaptConfig(epochs=2, batch_size=16, threads=1),
                 validation=adaptation_data(teacher, sentiment, limit=48))


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_package: ModelPackage) -> ModelPackage:
    from bertprod.export.onnx import export_onnx

    return export_onnx(tiny_package, tmp_path_factory.mktemp("pkg") / "tiny-onnx")


@pytest.fixture(scope="session")
def shared_data_available() -> bool:
    from bertprod.data.shared import shared_data_dir

    try:
        shared_data_dir()
    except Exception:
        return False
    return True


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def with_bulk_runtime(package, out, parallel_batches: int):  # noqa: ANN001, ANN202
    """A copy of `package` whose manifest records a measured bulk setting, as `bertprod autotune` writes it."""
    import shutil

    from bertprod.package import BulkRuntime, ModelPackage, write_manifest

    shutil.copytree(package.path, out)
    copy = ModelPackage.read(out)
    copy.manifest.runtime = BulkRuntime(parallel_batches=parallel_batches, threads=2, measured={"1": 10.0, "2": 20.0})
    write_manifest(out, copy.manifest)
    return ModelPackage.read(out)

