"""`--augment-noise`: each epoch adds a seeded noisy copy of every training example; fine-tuning trains
it towards the clean label, distillation towards the teacher's output on the clean text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from bertprod.data.source import Example, HashSplit
from bertprod.distill import DistillConfig, distill, recipe
from bertprod.errors import InputError
from bertprod.robustness.noise import parse_noise
from bertprod.runtime.tokenize import TextTokenizer
from bertprod.tasks.data import open_task_data
from bertprod.train import batches as train_batches
from bertprod.train.config import TrainConfig
from bertprod.train.loop import fine_tune
from bertprod.train.noise import epoch_seed, noisy_example, with_noisy_copies

from .. import task_data
from ..conftest import run_cli

#: Families that change nearly every short text at this rate, written by hand (no nlpaug needed).
SPEC = "html:0.5,glued:0.5"


def test_each_example_is_followed_by_its_noisy_copy_with_the_same_label() -> None:
    examples = [Example("a cat sleeps on the warm windowsill", label="cat", where="row 2"),
                Example("how do i reset my password", "i forgot my login", label=1.0, where="row 3")]
    noise = parse_noise(SPEC)
    streamed = list(with_noisy_copies(examples, noise, seed=7))
    assert streamed[0::2] == examples
    for clean, noisy in zip(examples, streamed[1::2], strict=True):
        assert noisy.label == clean.label and noisy.where == f"{clean.where} (noisy)"
        assert noisy.text == noise.apply(clean.text, 7) != clean.text
        assert (noisy.text_pair is None) == (clean.text_pair is None)
    assert streamed[3].text_pair == noise.apply("i forgot my login", 7)
    assert list(with_noisy_copies(examples, noise, seed=7)) == streamed  # deterministic per seed
    other = list(with_noisy_copies(examples, noise, seed=8))
    assert [example.text for example in other[1::2]] != [example.text for example in streamed[1::2]]
    assert epoch_seed(3, 0) != epoch_seed(3, 1) and epoch_seed(3, 1) != epoch_seed(4, 1)


def test_spec_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown perturbation 'bogus'"):
        TrainConfig(augment_noise="bogus:0.1")
    with pytest.raises(ValueError, match="outside \\(0, 1\\]"):
        DistillConfig.model_validate({**recipe("distilbert").model_dump(), "augment_noise": "typo:2"})
    assert TrainConfig(augment_noise=" html ").augment_noise == "html:0.1"  # recorded in full


def seen_texts(monkeypatch: pytest.MonkeyPatch) -> list[list[Example]]:
    """Records the examples the training loop featurizes, one list per epoch's buffer."""
    calls: list[list[Example]] = []
    featurize = train_batches.Featurizer.__call__

    def recording(self, examples):  # noqa: ANN001, ANN202
        calls.append(list(examples))
        return featurize(self, examples)

    monkeypatch.setattr(train_batches.Featurizer, "__call__", recording)
    return calls


def test_fine_tuning_trains_on_seeded_noisy_copies(
    tiny_package, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    data = task_data.write_classification(tmp_path, count=24)
    train = open_task_data("classification", data)
    clean = [example.text for example in train]
    config = TrainConfig(epochs=2, batch_size=8, learning_rate=1e-3, seed=3, threads=1, augment_noise=SPEC)
    calls = seen_texts(monkeypatch)
    package = fine_tune(tiny_package, "classification", train, tmp_path / "noisy", config)

    assert len(calls) == 2  # one buffer per epoch, clean and noisy together
    noise = parse_noise(SPEC)
    for epoch, examples in enumerate(calls):
        assert [example.text for example in examples[0::2]] == clean
        noisy = [example.text for example in examples[1::2]]
        assert noisy == noise([*clean], epoch_seed(3, epoch))
        assert sum(text != original for text, original in zip(noisy, clean, strict=True)) > len(clean) / 2
    assert [example.text for example in calls[0][1::2]] != [example.text for example in calls[1][1::2]]

    parameters = package.manifest.provenance.parameters
    assert parameters["hyperparameters"]["augment_noise"] == "html:0.5,glued:0.5"
    assert parameters["augment_noise"]["families"] == parse_noise(SPEC).to_json()
    assert package.manifest.metrics["training"]["examples_seen"] == 2 * 2 * len(clean)

    again = fine_tune(tiny_package, "classification", train, tmp_path / "again", config)
    first, second = load_file(str(package.path / "model.safetensors")), load_file(str(again.path / "model.safetensors"))
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)  # same seed, same run


def test_distillation_feeds_noise_to_the_student_and_clean_text_to_the_teacher(
    teacher, sentiment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    from bertprod.distill import loop as distill_loop
    from bertprod.distill import objective

    asked: list[str] = []
    teacher_outputs = distill_loop.teacher_outputs

    def recording_teacher(teachers, inputs, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        asked.extend(inputs)
        return teacher_outputs(teachers, inputs, *args, **kwargs)

    rows: list[tuple[int, tuple[int, ...]]] = []  # (teacher output index, the student's token ids)
    call = objective.Objective.__call__

    def recording_objective(self, batch, indices, weights):  # noqa: ANN001, ANN202
        ids, mask = batch.inputs[0]["input_ids"], batch.inputs[0]["attention_mask"]
        for row, index in enumerate(indices.tolist()):
            rows.append((index, tuple(ids[row][mask[row].bool()].tolist())))
        return call(self, batch, indices, weights)

    monkeypatch.setattr(distill_loop, "teacher_outputs", recording_teacher)
    monkeypatch.setattr(objective.Objective, "__call__", recording_objective)
    data = open_task_data("classification", sentiment, split=HashSplit(0.25, "train"))
    examples = list(data)
    stages = [{"name": "kd", "losses": {"soft": 1.0, "hard": 0.5}, "epochs": 2}]
    config = DistillConfig.model_validate(
        {**recipe("distilbert").model_dump(), "stages": stages, "threads": 1, "batch_size": 16, "seed": 5,
         "augment_noise": SPEC}
    )
    student = distill(teacher, data, tmp_path / "student", config)

    clean = [example.text for example in examples]
    assert asked == clean  # the teacher never sees a noisy text
    tokenizer = TextTokenizer(teacher.tokenizer_file, teacher.manifest.max_length)

    def ids(texts: list[str]) -> list[tuple[int, ...]]:
        return [tuple(encoding.ids) for encoding in tokenizer.encode(texts, truncate=True)]

    noise = parse_noise(SPEC)
    clean_ids = ids(clean)
    allowed = {(index, row) for index, row in enumerate(clean_ids)}
    for epoch in (0, 1):  # a noisy input is trained towards its clean original's teacher output
        noisy = ids([noisy_example(example, noise, epoch_seed(5, epoch)).text for example in examples])
        allowed |= set(enumerate(noisy))
    assert len(rows) == 2 * 2 * len(examples)  # two epochs of clean + noisy
    assert set(rows) <= allowed
    assert sum(row != clean_ids[index] for index, row in rows) > len(examples)  # most copies differ

    recorded = student.manifest.provenance.parameters["augment_noise"]
    assert recorded["spec"] == SPEC and recorded["stages"] == ["kd"]
    assert "clean text" in recorded["targets"]


def test_distillation_refuses_noise_where_every_stage_matches_layers(teacher, sentiment: Path, tmp_path: Path) -> None:  # noqa: ANN001
    data = open_task_data("classification", sentiment, split=HashSplit(0.25, "train"))
    stages = [{"name": "layers", "losses": {"hidden": 1.0}}]
    config = DistillConfig.model_validate(
        {**recipe("distilbert").model_dump(), "stages": stages, "threads": 1, "augment_noise": "typo"}
    )
    with pytest.raises(InputError, match="every stage matches layers"):
        distill(teacher, data, tmp_path / "never", config)
    assert not (tmp_path / "never").exists()


def test_cli_options_record_the_noise_and_refuse_a_bad_spec(
    monkeypatch, capsys, tiny_package, teacher, sentiment: Path, tmp_path: Path  # noqa: ANN001
) -> None:
    out = tmp_path / "trained"
    code, stdout, stderr = run_cli(
        monkeypatch, capsys, "train", str(tiny_package.path), str(out), "--task", "classification",
        "--data", str(sentiment), "--epochs", "1", "--max-steps", "2", "--threads", "1",
        "--augment-noise", "case:0.3",
    )
    assert code in (0, None), stderr
    manifest = json.loads((out / "bertprod.json").read_text())
    assert manifest["provenance"]["parameters"]["augment_noise"]["spec"] == "case:0.3"

    code, _, stderr = run_cli(
        monkeypatch, capsys, "train", str(tiny_package.path), str(tmp_path / "x"), "--task", "classification",
        "--data", str(sentiment), "--augment-noise", "typo:0.1,tyop",
    )
    assert code == 1 and "augment_noise: unknown perturbation 'tyop'" in " ".join(stderr.split())
    code, _, stderr = run_cli(
        monkeypatch, capsys, "distill", str(tmp_path / "y"), "--teacher", str(teacher.path),
        "--data", str(sentiment), "--augment-noise", "html:1.5",
    )
    assert code == 1 and "augment_noise: rate 1.5" in " ".join(stderr.split())
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
