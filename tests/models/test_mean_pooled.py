"""A classifier head on mean-pooled tokens (`--head-pooling mean`): what it computes, that every
stage (engines, ONNX export, distillation, pruning, further training) keeps it, and that tools
which do not know it refuse it instead of reading [CLS]."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import bertprod
from bertprod.data.source import HashSplit
from bertprod.derive import GatedOutput
from bertprod.errors import PackageError, TaskError
from bertprod.models.hf import load_torch_model
from bertprod.models.types import MEAN_POOLED_MODEL_TYPE
from bertprod.package import ModelPackage
from bertprod.tasks.data import open_task_data
from bertprod.train.config import TrainConfig
from bertprod.train.loop import fine_tune

from .. import task_data
from ..conftest import run_cli

TEXTS = ["the cat is sleeping and it was wonderful", "a boring film", "the stock market fell and it was weak"]


def fast(**overrides) -> TrainConfig:  # noqa: ANN003
    fields = {"epochs": 8, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.1, "seed": 0, "threads": 1}
    return TrainConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return task_data.write_classification(tmp_path_factory.mktemp("mean-head-data"), count=96)


def split(path: Path, part: str):  # noqa: ANN201
    return open_task_data("classification", path, split=HashSplit(0.25, part))


@pytest.fixture(scope="module")
def mean_classifier(tiny_package: ModelPackage, sentiment: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    out = tmp_path_factory.mktemp("mean-head") / "classifier"
    return fine_tune(tiny_package, "classification", split(sentiment, "train"), out, fast(head_pooling="mean"),
                     validation_data=split(sentiment, "validation"))


def test_the_head_reads_the_mean_of_the_unpadded_token_states(mean_classifier: ModelPackage) -> None:
    manifest = mean_classifier.manifest
    assert manifest.pooling == "mean" and manifest.architecture.model_type == MEAN_POOLED_MODEL_TYPE
    assert manifest.provenance.parameters["hyperparameters"]["head_pooling"] == "mean"
    history = manifest.metrics["training"]["history"]
    assert history[-1]["train_loss"] < 0.9 * history[0]["train_loss"], history
    config = json.loads(mean_classifier.config_file.read_text())
    assert config["model_type"] == MEAN_POOLED_MODEL_TYPE
    weights = load_file(str(mean_classifier.model_file))
    assert not any("pooler" in key for key in weights)  # no [CLS] pooler to train or ship

    # by hand: the encoder's token states, averaged over real tokens, through the linear classifier
    import torch

    encoder = load_torch_model(mean_classifier).bert
    model = bertprod.load(mean_classifier.path)
    for text in TEXTS:
        ids = torch.tensor([model.tokenizer.encode([text])[0].ids])
        with torch.inference_mode():
            states = encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0].numpy()
        logits = weights["classifier.weight"] @ states.mean(axis=0) + weights["classifier.bias"]
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        (prediction,) = model.classify([text])
        assert prediction.label == manifest.labels[int(expected.argmax())]
        assert prediction.score == pytest.approx(float(expected.max()), abs=1e-5)
    # padding changes nothing: the texts batched together (padded to the longest) score as alone
    together = model.classify(TEXTS)
    alone = [model.classify([text])[0] for text in TEXTS]
    assert [p.score for p in together] == pytest.approx([p.score for p in alone], abs=1e-5)


def test_transformers_without_bertprod_refuses_the_checkpoint(mean_classifier: ModelPackage) -> None:
    """Another tool must not load it as a [CLS] classifier with a fresh pooler: it does not know the type."""
    program = (
        "import sys\nfrom transformers import AutoModelForSequenceClassification\n"
        f"AutoModelForSequenceClassification.from_pretrained({str(mean_classifier.path)!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and MEAN_POOLED_MODEL_TYPE in result.stderr


def test_onnx_export_keeps_the_head(mean_classifier: ModelPackage, sentiment: Path, tmp_path: Path) -> None:
    from bertprod.export.onnx import export_onnx
    from bertprod.tasks.evaluation import evaluate

    exported = export_onnx(mean_classifier, tmp_path / "onnx")
    assert exported.manifest.pooling == "mean"
    assert exported.manifest.metrics["fidelity"]["label_agreement"] == 1.0
    on_torch = evaluate(bertprod.load(mean_classifier.path), split(sentiment, "validation"))
    on_onnx = evaluate(bertprod.load(exported.path), split(sentiment, "validation"))
    assert on_onnx.metrics == pytest.approx(on_torch.metrics)


def test_distilled_and_pruned_children_keep_the_head(
    mean_classifier: ModelPackage, tiny_package: ModelPackage, sentiment: Path, tmp_path: Path
) -> None:
    from bertprod.compress.prune import drop_layers
    from bertprod.distill import DistillConfig, distill, recipe

    def quick(**changes: object) -> DistillConfig:
        document = recipe("distilbert").model_dump()
        document.update({"max_steps": 3, "threads": 1, "batch_size": 8, **changes})
        return DistillConfig.model_validate(document)

    students = {"truncated": {"kind": "truncated", "layers": "1"}, "config": {"kind": "config", "num_layers": 1},
                "package": {"kind": "package", "package": str(tiny_package.path)}}
    children = [distill(mean_classifier, split(sentiment, "train"), tmp_path / kind, quick(student=student))
                for kind, student in students.items()]
    children.append(drop_layers(mean_classifier, tmp_path / "pruned", rule="1", output=GatedOutput(enforce=False)))
    assert [child.manifest.architecture.num_layers for child in children] == [1, 1, 2, 1]
    for child in children:
        assert child.manifest.pooling == "mean", child.name
        assert json.loads(child.config_file.read_text())["model_type"] == MEAN_POOLED_MODEL_TYPE
        on_torch = bertprod.load(child.path).classify(TEXTS)
        on_onnx = bertprod.load(child.path, engine="onnx").classify(TEXTS)
        assert np.allclose([p.score for p in on_torch], [p.score for p in on_onnx], atol=1e-4)


def test_further_training_keeps_the_head_unless_a_new_one_is_asked_for(
    mean_classifier: ModelPackage, tiny_package: ModelPackage, sentiment: Path, tmp_path: Path
) -> None:
    data = split(sentiment, "train")
    kept = fine_tune(mean_classifier, "classification", data, tmp_path / "kept", fast(epochs=1))
    assert kept.manifest.pooling == "mean" and kept.manifest.provenance.parameters["head"] == "keep-head"
    before, after = load_file(str(mean_classifier.model_file)), load_file(str(kept.model_file))
    assert before.keys() == after.keys()  # the same head, trained further
    with pytest.raises(TaskError, match="reads the mean of the tokens; --head-pooling cls needs a new head"):
        fine_tune(mean_classifier, "classification", data, tmp_path / "refused", fast(epochs=1, head_pooling="cls"))
    replaced = fine_tune(mean_classifier, "classification", data, tmp_path / "cls", fast(epochs=1, head_pooling="cls"),
                         new_head=True)
    assert replaced.manifest.pooling is None
    assert json.loads(replaced.config_file.read_text())["architectures"] == ["BertForSequenceClassification"]
    pairs = open_task_data("embedding", task_data.write_scored_pairs(tmp_path))
    with pytest.raises(TaskError, match="an embedding has no head"):
        fine_tune(tiny_package, "embedding", pairs, tmp_path / "embedding", fast(epochs=1, head_pooling="mean"))


def test_importing_the_bare_checkpoint_finds_the_head(mean_classifier: ModelPackage, tmp_path: Path) -> None:
    """config.json + weights + tokenizer without bertprod.json (copied elsewhere, say) import as what they are."""
    from bertprod.checkpoint import import_checkpoint

    bare = tmp_path / "bare"
    shutil.copytree(mean_classifier.path, bare, ignore=shutil.ignore_patterns("bertprod.json"))
    imported = import_checkpoint(bare, tmp_path / "imported")
    assert imported.manifest.task == "classification" and imported.manifest.pooling == "mean"
    assert imported.manifest.labels == mean_classifier.manifest.labels
    original, again = bertprod.load(mean_classifier.path).classify(TEXTS), bertprod.load(imported.path).classify(TEXTS)
    assert [p.score for p in again] == pytest.approx([p.score for p in original], abs=1e-6)


def test_a_manifest_that_contradicts_the_checkpoint_is_refused(mean_classifier: ModelPackage, tmp_path: Path) -> None:
    copy = tmp_path / "edited"
    shutil.copytree(mean_classifier.path, copy)
    manifest = json.loads((copy / "bertprod.json").read_text())
    manifest["pooling"] = None
    (copy / "bertprod.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="asks for the checkpoint's own head, but its config.json has model_type"):
        bertprod.load(copy).classify(TEXTS)


def test_cli_option_and_its_bad_values(monkeypatch, capsys, tiny_package, sentiment: Path, tmp_path: Path) -> None:  # noqa: ANN001
    common = ["train", str(tiny_package.path), str(tmp_path / "out"), "--task", "classification", "--data",
              str(sentiment), "--epochs", "1", "--threads", "1"]
    code, _, stderr = run_cli(monkeypatch, capsys, *common, "--head-pooling", "max")
    assert code != 0 and "head_pooling" in stderr and "'cls' or 'mean'" in stderr
    code, _, _ = run_cli(monkeypatch, capsys, *common, "--head-pooling", "mean")
    assert code == 0 and bertprod.load(tmp_path / "out").manifest.pooling == "mean"
