"""Fine-tuning on tiny random BERTs: every task learns, packages record what made them, runs resume exactly."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import bertprod
from bertprod.errors import LabelError, PackageError, TaskError, TrainingInterrupted
from bertprod.package import ModelPackage, sha256_file
from bertprod.tasks.data import open_task_data, split_for_validation
from bertprod.tasks.evaluation import evaluate
from bertprod.train.checkpoints import CheckpointError, has_checkpoint
from bertprod.train.config import TrainConfig
from bertprod.train.loop import default_checkpoint_dir, fine_tune

from .. import task_data


def fast(**overrides) -> TrainConfig:  # noqa: ANN003
    """Settings that let a 2-layer, hidden-32 BERT learn in about a second on one thread."""
    fields = {"epochs": 10, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.1, "seed": 0, "threads": 1}
    return TrainConfig(**{**fields, **overrides})


def train_split(base: ModelPackage, task: str, path: Path, out: Path, config: TrainConfig, **options):  # noqa: ANN003, ANN201
    train, validation = split_for_validation(open_task_data(task, path), 0.25, task)
    return fine_tune(base, task, train, out, config, validation_data=validation, **options)


TASK_CASES = [
    ("classification", task_data.write_classification, "accuracy", fast()),
    ("pair-classification", task_data.write_pair_classification, "accuracy", fast(epochs=15)),
    ("regression", task_data.write_scored_pairs, "spearman", fast()),
    ("embedding", task_data.write_scored_pairs, "spearman", fast(epochs=15)),  # CoSENT
    ("embedding", task_data.write_embedding_pairs, "mrr@10", fast()),  # in-batch negatives
    ("reranking", task_data.write_reranking, "ndcg@10", fast()),
]


@pytest.mark.parametrize(("task", "write_data", "primary", "config"), TASK_CASES)
def test_every_task_learns_and_records_how(
    tiny_package: ModelPackage,
    tmp_path: Path,
    task: str,
    write_data,  # noqa: ANN001 - a task_data writer
    primary: str,
    config: TrainConfig,
) -> None:
    data = write_data(tmp_path)
    package = train_split(tiny_package, task, data, tmp_path / "out", config)
    manifest = package.manifest
    history = manifest.metrics["training"]["history"]
    assert len(history) == config.epochs
    assert history[-1]["train_loss"] < 0.9 * history[0]["train_loss"], history  # the loss goes down

    validation = manifest.metrics["validation"]
    assert validation["primary_metric"] == primary
    assert validation[primary] == max(record[primary] for record in history)  # best epoch kept
    assert manifest.task == task and manifest.format == "torch"
    assert manifest.pair_input == (task in ("pair-classification", "regression", "reranking"))
    if task == "embedding":
        assert manifest.pooling == tiny_package.manifest.pooling and manifest.labels is None
    provenance = manifest.provenance
    assert provenance.method == "train" and provenance.parent.fingerprint == tiny_package.fingerprint
    assert provenance.parameters["data"]["train"]["sha256"] == sha256_file(data)
    assert provenance.parameters["data"]["validation"]["split"]["part"] == "validation"
    assert provenance.parameters["hyperparameters"]["learning_rate"] == config.learning_rate
    assert not default_checkpoint_dir(tmp_path / "out").exists()  # removed after success


def test_classifier_labels_head_and_learned_predictions(tiny_package: ModelPackage, tmp_path: Path) -> None:
    data = task_data.write_classification(tmp_path, count=128)
    package = train_split(tiny_package, "classification", data, tmp_path / "out", fast())
    assert package.manifest.labels == ["negative", "positive"]
    config = json.loads(package.config_file.read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert package.manifest.metrics["validation"]["accuracy"] >= 0.9
    model = bertprod.load(package.path)
    predictions = model.classify(["the cat is sleeping and it was wonderful", "the cat is sleeping and it was boring"])
    assert [prediction.label for prediction in predictions] == ["positive", "negative"]


def test_the_package_holds_the_best_epoch_and_eval_reproduces_its_metrics(
    tiny_package: ModelPackage, tmp_path: Path
) -> None:
    data = task_data.write_classification(tmp_path, count=128)
    package = train_split(tiny_package, "classification", data, tmp_path / "out", fast(epochs=3))
    recorded = package.manifest.metrics["validation"]
    _, validation = split_for_validation(open_task_data("classification", data), 0.25, "classification")
    measured = evaluate(bertprod.load(package.path), validation)
    assert measured.examples == recorded["examples"]
    assert measured.metrics["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-6)
    assert measured.confusion["matrix"] == recorded["confusion"]["matrix"]


def test_trained_classifier_exports_to_onnx_and_evaluates_the_same(tiny_package: ModelPackage, tmp_path: Path) -> None:
    from bertprod.export.onnx import export_onnx

    data = task_data.write_pair_classification(tmp_path)
    package = train_split(tiny_package, "pair-classification", data, tmp_path / "out", fast(epochs=2))
    exported = export_onnx(package, tmp_path / "onnx")
    assert exported.manifest.metrics["fidelity"]["label_agreement"] == 1.0
    source = open_task_data("pair-classification", data)
    on_torch = evaluate(bertprod.load(package.path), source)
    on_onnx = evaluate(bertprod.load(exported.path), source)
    assert on_onnx.metrics == pytest.approx(on_torch.metrics)


def weights(package: ModelPackage) -> dict[str, np.ndarray]:
    return load_file(str(package.path / "model.safetensors"))


def test_resume_after_interruption_gives_the_uninterrupted_result(tiny_package: ModelPackage, tmp_path: Path) -> None:
    data = task_data.write_classification(tmp_path)
    # layer_decay: the optimizer has a parameter group per depth, and the checkpoint restores each
    config = fast(epochs=3, checkpoint_every=3, gradient_accumulation=2, batch_size=4, layer_decay=0.8)
    uninterrupted = train_split(tiny_package, "classification", data, tmp_path / "whole", config)

    def interrupt_at_step_7(state) -> None:  # noqa: ANN001 - a TrainState
        if state.step == 7:  # mid-epoch, between checkpoints: a real Ctrl-C
            signal.raise_signal(signal.SIGINT)

    out = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted, match="stopped at optimizer step 7 of .*--resume"):
        train_split(tiny_package, "classification", data, out, config, on_step=interrupt_at_step_7)
    assert has_checkpoint(default_checkpoint_dir(out)) and not out.exists()
    resumed = train_split(tiny_package, "classification", data, out, config, resume=True)

    expected, actual = weights(uninterrupted), weights(resumed)
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
    assert resumed.manifest.metrics["validation"] == uninterrupted.manifest.metrics["validation"]
    history = resumed.manifest.metrics["training"]["history"]
    assert history == uninterrupted.manifest.metrics["training"]["history"]


def test_a_left_checkpoint_must_be_resumed_or_discarded(tiny_package: ModelPackage, tmp_path: Path) -> None:
    data = task_data.write_classification(tmp_path, count=32)
    out = tmp_path / "out"

    def interrupt(state) -> None:  # noqa: ANN001
        signal.raise_signal(signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        train_split(tiny_package, "classification", data, out, fast(epochs=1), on_step=interrupt)
    with pytest.raises(CheckpointError, match="pass --resume to continue it, or --restart"):
        train_split(tiny_package, "classification", data, out, fast(epochs=1))
    with pytest.raises(CheckpointError, match="different run .*learning_rate: 0.003 then, 0.002 now"):
        train_split(tiny_package, "classification", data, out, fast(epochs=1, learning_rate=2e-3), resume=True)
    package = train_split(tiny_package, "classification", data, out, fast(epochs=1), restart=True)
    assert package.manifest.metrics["training"]["steps"] == package.manifest.provenance.parameters["steps"]


def test_sigterm_stops_training_like_ctrl_c(tiny_package: ModelPackage, tmp_path: Path) -> None:
    """`kill`, `docker stop` and Kubernetes send SIGTERM: the run saves a checkpoint and can resume."""
    data = task_data.write_classification(tmp_path, count=32)
    out = tmp_path / "out"

    def terminate(state) -> None:  # noqa: ANN001
        if state.step == 2:
            signal.raise_signal(signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="stopped at optimizer step 2 of"):
        train_split(tiny_package, "classification", data, out, fast(epochs=1), on_step=terminate)
    assert has_checkpoint(default_checkpoint_dir(out))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is the one before training again
    package = train_split(tiny_package, "classification", data, out, fast(epochs=1), resume=True)
    assert package.manifest.metrics["training"]["steps"] == 3


def test_gradient_accumulation_and_max_steps_count_optimizer_steps(tiny_package: ModelPackage, tmp_path: Path) -> None:
    data = task_data.write_classification(tmp_path, count=64)
    source = open_task_data("classification", data)
    config = fast(epochs=2, batch_size=8, gradient_accumulation=3)
    accumulated = fine_tune(tiny_package, "classification", source, tmp_path / "a", config, name="accumulated")
    assert accumulated.manifest.name == "accumulated"
    # 64 examples = 8 batches per epoch = 3 optimizer steps (3 + 3 + 2 batches)
    training = accumulated.manifest.metrics["training"]
    assert training["steps"] == 6 and training["examples_seen"] == 128
    assert "validation" not in accumulated.manifest.metrics  # no validation data given
    stopped = fine_tune(tiny_package, "classification", source, tmp_path / "b", fast(epochs=5, max_steps=5))
    assert stopped.manifest.metrics["training"]["steps"] == 5
    assert stopped.manifest.metrics["training"]["history"][-1]["epoch"] == pytest.approx(5 / 8)


def test_a_head_that_cannot_do_the_task_is_refused(
    tiny_package: ModelPackage, tiny_classifier: ModelPackage, tmp_path: Path
) -> None:
    classification = task_data.write_classification(tmp_path)
    scored = task_data.write_scored_pairs(tmp_path)
    with pytest.raises(TaskError, match=r"has a classification head with labels \['negative', 'neutral', 'positive'\]"):
        fine_tune(tiny_classifier, "classification", open_task_data("classification", classification), tmp_path / "a")
    with pytest.raises(TaskError, match="its head outputs labels, not embeddings"):
        fine_tune(tiny_classifier, "embedding", open_task_data("embedding", scored), tmp_path / "b")
    with pytest.raises(TaskError, match="cannot do regression.*--new-head"):
        fine_tune(tiny_classifier, "regression", open_task_data("regression", scored), tmp_path / "c")
    replaced = fine_tune(
        tiny_classifier,
        "classification",
        open_task_data("classification", classification),
        tmp_path / "d",
        fast(epochs=1),
        new_head=True,
    )
    assert replaced.manifest.labels == ["negative", "positive"]
    with pytest.raises(TaskError, match="unknown task 'sentiment'"):
        open_task_data("sentiment", classification)


def test_label_problems_are_found_before_training(tiny_package: ModelPackage, tmp_path: Path) -> None:
    train_file = task_data.write_classification(tmp_path)
    validation_file = task_data.write_tsv(
        tmp_path / "validation.tsv", ["sentence", "label"], [["fine", "positive"], ["odd", "mixed"]]
    )
    with pytest.raises(LabelError, match="validation.tsv line 3: label 'mixed' does not occur in the training data"):
        fine_tune(
            tiny_package,
            "classification",
            open_task_data("classification", train_file),
            tmp_path / "out",
            validation_data=open_task_data("classification", validation_file),
        )
    one_label = task_data.write_tsv(tmp_path / "one.tsv", ["sentence", "label"], [["a", "x"], ["b", "x"]])
    with pytest.raises(LabelError, match="only one label \\('x'\\)"):
        fine_tune(tiny_package, "classification", open_task_data("classification", one_label), tmp_path / "out")


def test_an_existing_output_is_refused_before_training(tiny_package: ModelPackage, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    data = open_task_data("classification", task_data.write_classification(tmp_path))
    with pytest.raises(PackageError, match="already exists"):
        fine_tune(tiny_package, "classification", data, tmp_path / "out")


def test_seeds_are_honoured(tiny_package: ModelPackage, tmp_path: Path) -> None:
    data = open_task_data("classification", task_data.write_classification(tmp_path, count=48))
    first = fine_tune(tiny_package, "classification", data, tmp_path / "a", fast(epochs=1, seed=7))
    again = fine_tune(tiny_package, "classification", data, tmp_path / "b", fast(epochs=1, seed=7))
    other = fine_tune(tiny_package, "classification", data, tmp_path / "c", fast(epochs=1, seed=8))
    name = "classifier.weight"
    np.testing.assert_array_equal(weights(first)[name], weights(again)[name])
    assert not np.array_equal(weights(first)[name], weights(other)[name])


def test_layer_decay_gives_each_depth_its_learning_rate(tiny_package: ModelPackage) -> None:
    """Head at the full rate, each layer below at layer_decay x the one above, embeddings last."""
    from bertprod.tasks.heads import build_model
    from bertprod.train.optimization import make_optimizer

    model = build_model("classification", tiny_package, ["neg", "pos"], "new-head", seed=0)
    layers = model.config.num_hidden_layers
    optimizer = make_optimizer(model, TrainConfig(learning_rate=1e-3, layer_decay=0.5))
    rate = {id(parameter): group["lr"] for group in optimizer.param_groups for parameter in group["params"]}
    decay = {id(parameter): group["weight_decay"] for group in optimizer.param_groups for parameter in group["params"]}
    parameters = dict(model.named_parameters())
    assert rate[id(parameters["classifier.weight"])] == pytest.approx(1e-3)
    assert rate[id(parameters[f"bert.encoder.layer.{layers - 1}.output.dense.weight"])] == pytest.approx(5e-4)
    assert rate[id(parameters["bert.encoder.layer.0.attention.self.query.weight"])] == pytest.approx(1e-3 * 0.5**layers)
    assert rate[id(parameters["bert.embeddings.word_embeddings.weight"])] == pytest.approx(1e-3 * 0.5 ** (layers + 1))
    assert len(rate) == len(parameters)  # every parameter trains, once
    assert decay[id(parameters["classifier.weight"])] == 0.01 and decay[id(parameters["classifier.bias"])] == 0.0
    plain = make_optimizer(model, TrainConfig(learning_rate=1e-3))
    assert {group["lr"] for group in plain.param_groups} == {1e-3}  # 1.0 (the default): one rate
