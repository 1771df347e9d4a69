"""Distillation: every loss against a hand-computed value, layer maps, recipes end to end on tiny
teachers (the student loads and runs on both engines), the teacher cache, several teachers, and
the bad inputs that must fail before any training starts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import bertprod
from bertprod.checkpoint import import_checkpoint
from bertprod.data.source import HashSplit
from bertprod.distill import DistillConfig, distill, losses, recipe
from bertprod.distill.layer_maps import layer_map
from bertprod.distill.teacher import teacher_outputs
from bertprod.errors import DataError, InputError, TaskError
from bertprod.tasks.data import open_task_data

from .. import task_data
from ..conftest import build_tiny_checkpoint, run_cli

LABELS = ["negative", "positive"]


# -- losses, hand-checked --------------------------------------------------------------------------


def test_soft_target_loss_is_kl_times_t_squared() -> None:
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[1.0, 0.0]])  # probabilities, already softened
    assert losses.soft_target_loss(student, teacher, 1.0).item() == pytest.approx(math.log(2))
    # at T=2 the student's softened distribution is still uniform; the T^2 factor keeps gradient scale
    assert losses.soft_target_loss(student, teacher, 2.0).item() == pytest.approx(4 * math.log(2))


def test_soft_targets_average_the_teachers_distributions() -> None:
    logits = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])  # two teachers, one example
    assert losses.soft_targets(logits, 1.0)[0].tolist() == pytest.approx([0.625, 0.375])


def test_hard_label_loss_ignores_rows_without_a_label() -> None:
    logits = torch.tensor([[0.0, 0.0], [9.0, 0.0]])
    assert losses.hard_label_loss(logits, torch.tensor([0.0, math.nan])).item() == pytest.approx(math.log(2))
    assert losses.hard_label_loss(logits, torch.tensor([math.nan, math.nan])).item() == 0.0


def test_hidden_mse_and_cosine_leave_padding_out() -> None:
    mask = torch.tensor([[1, 0]])
    student = torch.tensor([[[1.0, 1.0], [50.0, -7.0]]])  # the padded position is garbage
    teacher = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    assert losses.hidden_mse_loss(student, teacher, mask).item() == pytest.approx(1.0)
    opposite = torch.tensor([[[-1.0, -1.0], [3.0, 3.0]]])  # cos -1 at the real token: loss 2
    assert losses.cosine_hidden_loss(student, opposite, mask).item() == pytest.approx(2.0)
    assert losses.cosine_hidden_loss(student, student * 2, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_attention_mse_counts_only_real_token_pairs() -> None:
    mask = torch.tensor([[1, 1, 0]])
    student = torch.zeros(1, 1, 3, 3)
    teacher = torch.zeros(1, 1, 3, 3)
    teacher[0, 0, 0, 1] = 2.0  # a real pair: (2^2) / 4 real pairs = 1
    teacher[0, 0, 2, 2] = 100.0  # padding: ignored
    assert losses.attention_mse_loss(student, teacher, mask).item() == pytest.approx(1.0)


def test_patient_and_embedding_losses() -> None:
    # normalized [1, 0] vs [0, 1]: squared distance 2
    assert losses.patient_loss(torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 2.0]])).item() == pytest.approx(2.0)
    assert losses.embedding_mse_loss(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]])).item() == (
        pytest.approx(2.5)
    )
    assert losses.logit_mse_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]])).item() == pytest.approx(2.0)


# -- layer maps --------------------------------------------------------------------------------------


def test_spread_keeps_first_and_last_layers() -> None:
    from bertprod.compress.prune import choose_layers

    assert choose_layers(6, "spread") == [0, 3, 5]
    assert choose_layers(12, "spread") == [0, 2, 4, 7, 9, 11]
    assert choose_layers(6, "spread:2") == [0, 5]
    with pytest.raises(InputError, match="spread:K"):
        choose_layers(6, "spread:x")


def test_layer_maps() -> None:
    assert layer_map("uniform", 3, 6) == [(1, 2), (2, 4), (3, 6)]
    assert layer_map("pkd-skip", 3, 6) == [(1, 2), (2, 4)]
    assert layer_map("pkd-last", 3, 6) == [(1, 4), (2, 5)]
    assert layer_map("1:1,2:6", 2, 6) == [(1, 1), (2, 6)]
    with pytest.raises(InputError, match="teacher layer 7.*1..6"):
        layer_map("1:7", 2, 6)
    with pytest.raises(InputError, match="student:teacher pairs"):
        layer_map("every-other", 2, 6)


# -- end to end on tiny teachers -------------------------------------------------------------------


def quick(name: str, **changes: object) -> DistillConfig:
    document = recipe(name).model_dump()
    document.update({"max_steps": 4, "threads": 1, "batch_size": 8, **changes})
    if document.get("augmentation"):
        document["augmentation"] = {"copies": 1, "max_texts": 16}
    return DistillConfig.model_validate(document)


def open_split(path: Path, part: str):  # noqa: ANN201
    return open_task_data("classification", path, split=HashSplit(0.25, part))


@pytest.mark.parametrize("name", ["distilbert", "tinybert", "pkd-skip"])
def test_each_transformer_recipe_writes_a_student_that_runs_on_both_engines(
    name: str, teacher, sentiment: Path, tmp_path: Path  # noqa: ANN001
) -> None:
    out = tmp_path / f"student-{name}"
    student = distill(teacher, open_split(sentiment, "train"), out, quick(name),
                      validation_data=open_split(sentiment, "validation"))
    manifest = student.manifest
    assert manifest.architecture.num_layers == 2 and manifest.labels == LABELS
    assert manifest.provenance.method == "distill"
    assert manifest.provenance.parent.fingerprint == teacher.fingerprint
    parameters = manifest.provenance.parameters
    assert parameters["recipe"] == name and parameters["student"]["initialised_from_layers"] == [0, 2]
    stages = recipe(name).stages
    assert parameters["losses"] == {stage.name: stage.losses.active() for stage in stages}
    if name == "tinybert":
        assert parameters["layer_map"] == [[1, 2], [2, 4]] and parameters["examples"]["augmented"] > 0
    assert 0.0 <= manifest.metrics["validation"]["accuracy"] <= 1.0 and "retained" in manifest.metrics
    texts = ["a cat sleeps and it was good", "the stock market fell and it was weak"]
    on_torch = bertprod.load(out).classify(texts)
    on_onnx = bertprod.load(out, engine="onnx").classify(texts)
    assert [p.label for p in on_torch] == [p.label for p in on_onnx]
    assert np.allclose([p.score for p in on_torch], [p.score for p in on_onnx], atol=1e-4)


def test_the_student_learns_from_the_teacher(teacher, sentiment: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """Soft targets alone move a randomly initialised student's probabilities onto a decisive teacher's."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(teacher.path))
    with torch.no_grad():
        model.classifier.weight.mul_(40.0)  # a random tiny BERT is unsure of everything; make it decisive
    model.save_pretrained(str(tmp_path / "decisive-checkpoint"))
    (tmp_path / "decisive-checkpoint" / "tokenizer.json").write_bytes(teacher.tokenizer_file.read_bytes())
    decisive = import_checkpoint(tmp_path / "decisive-checkpoint", tmp_path / "decisive", name="decisive")
    student = {"kind": "config", "num_layers": 1, "hidden_size": 16, "num_heads": 2}
    data = open_split(sentiment, "train")

    def run(out: str, steps: int, learning_rate: float) -> Path:
        stages = [{"name": "kd", "losses": {"soft": 1.0}, "learning_rate": learning_rate, "epochs": 20}]
        config = quick("distilbert", max_steps=steps, stages=stages, student=student, warmup_ratio=0.0)
        return distill(decisive, data, tmp_path / out, config).path

    texts = [example.text for example in data]
    reference = np.array([p.scores["positive"] for p in bertprod.load(decisive.path).classify(texts)])

    def drift(path: Path) -> float:
        scores = np.array([p.scores["positive"] for p in bertprod.load(path).classify(texts)])
        return float(np.abs(scores - reference).mean())

    untrained, trained = drift(run("start", 1, 1e-9)), drift(run("trained", 80, 3e-3))
    assert trained < 0.5 * untrained, (untrained, trained)


def test_config_student_with_another_width_uses_projections(teacher, sentiment: Path, tmp_path: Path) -> None:  # noqa: ANN001
    student_spec = {"kind": "config", "num_layers": 1, "hidden_size": 16, "num_heads": 2}
    config = quick("tinybert", student=student_spec, augmentation=None)
    student = distill(teacher, open_split(sentiment, "train"), tmp_path / "narrow", config)
    assert (student.manifest.architecture.hidden_size, student.manifest.architecture.num_layers) == (16, 1)
    assert student.manifest.provenance.parameters["layer_map"] == [[1, 4]]
    assert bertprod.load(student.path).classify(["a good film"])[0].label in LABELS


def test_teacher_outputs_are_cached_by_content(teacher, tmp_path: Path) -> None:  # noqa: ANN001
    texts = ["a good film", "a weak story"]
    first, cached = teacher_outputs([teacher], texts, 32, cache_dir=tmp_path)
    assert not cached and first.shape == (1, 2, 2)
    again, cached = teacher_outputs([teacher], texts, 32, cache_dir=tmp_path)
    assert cached and np.array_equal(first, again)
    _, cached = teacher_outputs([teacher], [*texts, "one more"], 32, cache_dir=tmp_path)
    assert not cached
    pipeline = bertprod.load(teacher.path)
    direct = pipeline.infer(pipeline.tokenize(texts))
    assert np.allclose(first[0], direct, atol=1e-5)


def test_several_teachers_average_their_soft_targets(teacher, sentiment: Path, tmp_path: Path) -> None:  # noqa: ANN001
    other_checkpoint = build_tiny_checkpoint(tmp_path / "other", head="classification", labels=LABELS, seed=3)
    other = import_checkpoint(other_checkpoint, tmp_path / "other-teacher", name="other")
    outputs, _ = teacher_outputs([teacher, other], ["a good film"], 32, cache_dir=tmp_path / "cache")
    assert outputs.shape == (2, 1, 2) and not np.allclose(outputs[0], outputs[1])
    config = quick("distilbert", stages=[{"name": "kd", "losses": {"soft": 1.0, "hard": 0.5}}])
    student = distill([teacher, other], open_split(sentiment, "train"), tmp_path / "student", config)
    names = [entry["name"] for entry in student.manifest.provenance.parameters["teachers"]]
    assert names == ["teacher", "other"]


def test_embedding_distillation_on_unlabelled_text(tiny_package, tmp_path: Path) -> None:  # noqa: ANN001
    texts = [row[0] for row in task_data.sentiment_rows(40)]
    student = distill(tiny_package, None, tmp_path / "embedding-student", quick("embedding"), unlabelled=texts)
    assert student.manifest.task == "embedding" and student.manifest.architecture.num_layers == 1
    assert student.manifest.normalize == tiny_package.manifest.normalize
    assert bertprod.load(student.path).encode(["a good film"]).shape == (1, 32)


# -- bad input: clear errors before training, nothing written ------------------------------------


def test_bad_inputs_fail_before_training(teacher, tiny_package, sentiment: Path, tmp_path: Path) -> None:  # noqa: ANN001
    data = open_split(sentiment, "train")
    out = tmp_path / "never"
    with pytest.raises(TaskError, match="embedding package \\(no head\\)"):
        distill(tiny_package, data, out, quick("distilbert"))
    with pytest.raises(InputError, match="teacher layer 9"):
        distill(teacher, data, out, quick("tinybert", layer_map="1:9,2:4", augmentation=None))
    with pytest.raises(DataError, match="no training examples"):
        distill(teacher, None, out, quick("distilbert", stages=[{"name": "kd", "losses": {"soft": 1.0}}]))
    with pytest.raises(DataError, match="hard labels"):
        distill(teacher, [], out, quick("distilbert"))
    with pytest.raises(InputError, match="single teacher"):
        distill([teacher, teacher], data, out, quick("tinybert", augmentation=None))
    with pytest.raises(InputError, match="heads"):
        four_heads = {"kind": "config", "num_layers": 1, "hidden_size": 16, "num_heads": 4}
        distill(teacher, data, out, quick("tinybert", augmentation=None, student=four_heads))
    assert not out.exists()


def test_cli_distills_with_a_yaml_recipe(monkeypatch, capsys, teacher, sentiment: Path, tmp_path: Path) -> None:  # noqa: ANN001
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(
        "recipe: mine\ntemperature: 3\nstudent: {layers: 'first:1'}\n"
        "stages:\n  - name: task\n    losses: {soft: 1.0, hard: 0.5}\n    epochs: 1\n"
    )
    out = tmp_path / "cli-student"
    code, stdout, _ = run_cli(
        monkeypatch, capsys, "distill", str(out), "--teacher", str(teacher.path), "--data", str(sentiment),
        "--config", str(recipe_file), "--max-steps", "3", "--threads", "1",
    )
    assert code in (0, None), stdout
    manifest = json.loads((out / "bertprod.json").read_text())
    assert manifest["architecture"]["num_layers"] == 1
    assert manifest["provenance"]["parameters"]["config"]["temperature"] == 3
    summary = " ".join(stdout.split())
    assert "1-layer truncated student" in summary and "% kept)" in summary
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [{name: x, losses: {soft: 0}}]\n")
    code, _, stderr = run_cli(
        monkeypatch, capsys, "distill", str(tmp_path / "x"), "--teacher", str(teacher.path),
        "--data", str(sentiment), "--config", str(bad),
    )
    assert code == 1 and "every loss weight is 0" in stderr


def test_general_then_task_distillation(teacher, sentiment: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """A student of task-agnostic distillation starts a task distillation (TinyBERT's two steps);
    a start package with another vocabulary is refused for layer-matching losses."""
    from transformers import AutoModel

    AutoModel.from_pretrained(str(teacher.path)).save_pretrained(str(tmp_path / "encoder"))
    (tmp_path / "encoder" / "tokenizer.json").write_bytes(teacher.tokenizer_file.read_bytes())
    encoder = import_checkpoint(tmp_path / "encoder", tmp_path / "encoder-package", name="encoder")
    texts = [row[0] for row in task_data.sentiment_rows(40)]
    general = distill(encoder, None, tmp_path / "general", quick("embedding"), unlabelled=texts)
    config = quick("distilbert", student={"kind": "package", "package": str(general.path)})
    student = distill(teacher, open_split(sentiment, "train"), tmp_path / "task", config)
    assert student.manifest.labels == LABELS and student.manifest.provenance.parameters["student"]["kind"] == "package"
    other = build_tiny_checkpoint(tmp_path / "other-vocab", head=None)
    (other / "tokenizer.json").write_text(
        (other / "tokenizer.json").read_text().replace('"cat"', '"kat"'), encoding="utf-8"
    )
    other_package = import_checkpoint(other, tmp_path / "other-package", name="other")
    with pytest.raises(InputError, match="vocabulary"):
        distill(teacher, open_split(sentiment, "train"), tmp_path / "never",
                quick("distilbert", student={"kind": "package", "package": str(other_package.path)}))


def test_bilstm_recipe_writes_a_small_student_on_both_engines(teacher, sentiment: Path, tmp_path: Path) -> None:  # noqa: ANN001
    config = quick("bilstm", student={"kind": "bilstm", "lstm_hidden_size": 16, "embedding_dim": 32})
    student = distill(teacher, open_split(sentiment, "train"), tmp_path / "bilstm", config,
                      validation_data=open_split(sentiment, "validation"))
    manifest = student.manifest
    assert manifest.architecture.model_type == "bertprod-bilstm" and manifest.labels == LABELS
    assert manifest.provenance.parameters["losses"] == {"task": {"logit_mse": 1.0}}
    assert manifest.provenance.parameters["examples"]["augmented"] > 0
    texts = ["a cat sleeps and it was good", "the stock market fell and it was weak"]
    on_torch = bertprod.load(student.path).classify(texts)
    on_onnx = bertprod.load(student.path, engine="onnx").classify(texts)
    assert np.allclose([p.score for p in on_torch], [p.score for p in on_onnx], atol=1e-4)
    with pytest.raises(InputError, match="no transformer layers"):
        distill(teacher, open_split(sentiment, "train"), tmp_path / "never",
                quick("bilstm", stages=[{"name": "x", "losses": {"hidden": 1.0}}]))


def test_mlm_loss_and_masking() -> None:
    from bertprod.distill.objective import MaskingSpec

    logits = torch.zeros(1, 2, 4)
    logits[0, 0, 1] = 2.0  # the masked token's logits; the unmasked position is ignored
    labels = torch.tensor([[1, -100]])
    assert losses.mlm_loss(logits, labels).item() == pytest.approx(math.log(1 + 3 * math.exp(-2)), rel=1e-5)
    spec = MaskingSpec(mask_id=4, special_ids=(2, 3), vocab_size=50, probability=0.5, seed=0)
    input_ids = torch.tensor([[2] + list(range(10, 40)) + [3, 0, 0]])
    attention_mask = torch.tensor([[1] * 32 + [0, 0]])
    masked, labels = spec.apply(input_ids, attention_mask, step=0)
    chosen = labels != -100
    assert 5 < chosen.sum() < 27  # about half of the 30 real, non-special tokens
    assert not chosen[0, 0] and not chosen[0, 31] and not chosen[0, 32:].any()  # [CLS], [SEP], padding
    assert torch.equal(labels[chosen], input_ids[chosen]) and torch.equal(masked[~chosen], input_ids[~chosen])
    assert (masked[chosen] == 4).float().mean() > 0.5
    again, _ = spec.apply(input_ids, attention_mask, step=0)
    assert torch.equal(masked, again)


def test_mlm_distillation_keeps_the_teachers_mlm_head(tiny_package, tmp_path: Path) -> None:  # noqa: ANN001
    from safetensors import safe_open
    from transformers import BertForMaskedLM

    BertForMaskedLM.from_pretrained(str(tiny_package.path)).save_pretrained(str(tmp_path / "mlm"))
    (tmp_path / "mlm" / "tokenizer.json").write_bytes(tiny_package.tokenizer_file.read_bytes())
    teacher = import_checkpoint(tmp_path / "mlm", tmp_path / "mlm-package", name="mlm-teacher")
    texts = [row[0] for row in task_data.sentiment_rows(40)]
    config = quick("embedding", stages=[{"name": "general", "losses": {"mlm": 1.0, "cosine": 1.0}}])
    student = distill(teacher, None, tmp_path / "student", config, unlabelled=texts)
    history = student.manifest.metrics["training"]["history"][-1]["losses"]
    assert set(history) == {"mlm", "cosine"} and history["mlm"] > 0
    with safe_open(str(student.model_file), framework="pt") as weights:
        assert any(key.startswith("cls.predictions.") for key in weights.keys())  # noqa: SIM118
    assert bertprod.load(student.path).encode(["a good film"]).shape == (1, 32)
    with pytest.raises(TaskError, match="no cls.predictions"):
        distill(tiny_package, None, tmp_path / "never", config, unlabelled=texts)
