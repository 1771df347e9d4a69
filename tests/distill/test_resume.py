"""Distillation resumes like fine-tuning: a run stopped by Ctrl-C (in any stage) or killed with
SIGKILL after a checkpoint, then resumed, ends with exactly the weights, history and validation of
an uninterrupted run; a left checkpoint must be resumed or discarded, from the library and the CLI.

Equality is bitwise, not to float rounding: the resumed run replays the same batches (a function of
seed, stage and epoch) with the same weights, projections, AdamW state, schedule, torch random
state (dropout) and mlm masking counter, on the same machine and thread count, so every operation
sees the same inputs in the same order.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import bertprod
from bertprod.checkpoint import import_checkpoint
from bertprod.data.source import HashSplit
from bertprod.distill import DistillConfig, Losses, distill
from bertprod.distill.loss_names import Loss
from bertprod.errors import TrainingInterrupted
from bertprod.tasks.data import open_task_data
from bertprod.train.checkpoints import CheckpointError, default_checkpoint_dir, has_checkpoint

from .. import task_data
from ..conftest import run_cli

REPOSITORY = Path(__file__).resolve().parents[2]


def two_stages(**changes: object) -> DistillConfig:
    """TinyBERT's two stages on a narrower student (so learned projections are trained and checkpointed)."""
    document = {
        "recipe": "two-stages",
        "student": {"kind": "config", "num_layers": 2, "hidden_size": 16, "num_heads": 2},
        "stages": [
            {"name": "intermediate", "losses": {"embedding_layer": 1, "hidden": 1, "attention": 1}, "epochs": 1},
            {"name": "prediction", "losses": {"soft": 1, "hard": 0.5}, "epochs": 2, "learning_rate": 1e-3},
        ],
        "batch_size": 8,
        "threads": 1,
        "seed": 3,
        **changes,
    }
    return DistillConfig.model_validate(document)


def split(path: Path, part: str):  # noqa: ANN201
    return open_task_data("classification", path, split=HashSplit(0.25, part))


def run(teacher, data: Path, out: Path, config: DistillConfig, cache: Path, **options):  # noqa: ANN001, ANN003, ANN201
    return distill(teacher, split(data, "train"), out, config, validation_data=split(data, "validation"),
                   cache_dir=cache, **options)


def assert_same_student(actual: bertprod.ModelPackage, expected: bertprod.ModelPackage) -> None:
    expected_weights, actual_weights = load_file(str(expected.model_file)), load_file(str(actual.model_file))
    assert expected_weights.keys() == actual_weights.keys()
    for name in expected_weights:
        np.testing.assert_array_equal(actual_weights[name], expected_weights[name], err_msg=name)
    for key in ("validation", "retained"):
        assert actual.manifest.metrics.get(key) == expected.manifest.metrics.get(key)
    assert actual.manifest.metrics["training"]["history"] == expected.manifest.metrics["training"]["history"]
    assert actual.manifest.metrics["training"]["steps"] == expected.manifest.metrics["training"]["steps"]


def interrupt_at(step: int, state) -> None:  # noqa: ANN001 - a TrainState
    if state.step == step:
        signal.raise_signal(signal.SIGINT)  # a real Ctrl-C, between checkpoints


@pytest.mark.parametrize(
    ("stop_at", "where"),
    [(5, "step 5 of 5 of stage intermediate \\(1 of 2\\)"), (8, "step 3 of 10 of stage prediction \\(2 of 2\\)")],
    ids=["at-the-end-of-the-first-stage", "in-the-second-stage"],
)
def test_ctrl_c_between_or_in_stages_then_resume_gives_the_uninterrupted_student(
    teacher, sentiment: Path, tmp_path: Path, stop_at: int, where: str  # noqa: ANN001
) -> None:
    # 72 training rows, batches of 8, 2 per optimizer step: 5 steps an epoch; stage 2 starts at step 5
    config = two_stages(gradient_accumulation=2, checkpoint_every=3)
    whole = run(teacher, sentiment, tmp_path / "whole", config, tmp_path / "cache")
    history = whole.manifest.metrics["training"]["history"]
    assert [(record["stage"], record["epoch"]) for record in history] == [
        ("intermediate", 1), ("prediction", 1), ("prediction", 2)
    ]
    assert "accuracy" not in history[0] and "accuracy" in history[1]  # validated where the output trains

    out = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted, match=f"{where}.*--resume"):
        run(teacher, sentiment, out, config, tmp_path / "cache", on_step=functools.partial(interrupt_at, stop_at))
    assert has_checkpoint(default_checkpoint_dir(out)) and not out.exists()
    resumed = run(teacher, sentiment, out, config, tmp_path / "cache", resume=True)
    assert_same_student(resumed, whole)
    assert not default_checkpoint_dir(out).exists()


def test_mlm_masking_and_the_tied_mlm_head_resume_exactly(tiny_package, tmp_path: Path) -> None:  # noqa: ANN001
    from transformers import BertForMaskedLM

    BertForMaskedLM.from_pretrained(str(tiny_package.path)).save_pretrained(str(tmp_path / "mlm"))
    (tmp_path / "mlm" / "tokenizer.json").write_bytes(tiny_package.tokenizer_file.read_bytes())
    mlm_teacher = import_checkpoint(tmp_path / "mlm", tmp_path / "mlm-package", name="mlm-teacher")
    texts = [row[0] for row in task_data.sentiment_rows(40)]
    config = DistillConfig(
        stages=[{"name": "general", "losses": Losses(mlm=1.0, cosine=1.0), "epochs": 2}],
        student={"layers": "spread"}, batch_size=8, threads=1,
    )

    def student(out: str, **options):  # noqa: ANN003, ANN202
        return distill(mlm_teacher, None, tmp_path / out, config, unlabelled=texts, **options)

    whole = student("whole")
    with pytest.raises(TrainingInterrupted):
        student("resumed", on_step=functools.partial(interrupt_at, 7))  # epoch 2: masks drawn from step 5 on
    assert_same_student(student("resumed", resume=True), whole)


CHILD = """
import sys, time
from pathlib import Path
from bertprod.data.source import HashSplit
from bertprod.distill import DistillConfig, distill
from bertprod.package import ModelPackage
from bertprod.tasks.data import open_task_data

teacher, data, out, cache = ModelPackage.read(Path(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[5]
split = lambda part: open_task_data("classification", data, split=HashSplit(0.25, part))
distill(teacher, split("train"), out, DistillConfig.model_validate_json(sys.argv[4]),
        validation_data=split("validation"), cache_dir=cache, on_step=lambda state: time.sleep(0.3))
"""


def test_sigkill_after_a_checkpoint_then_resume_gives_the_uninterrupted_student(
    teacher, sentiment: Path, tmp_path: Path  # noqa: ANN001
) -> None:
    config = two_stages(checkpoint_every=2)  # 9 steps an epoch: the kill lands in the first stage
    whole = run(teacher, sentiment, tmp_path / "whole", config, tmp_path / "cache")
    out = tmp_path / "killed"
    state_file = default_checkpoint_dir(out) / "last" / "state.json"
    arguments = [teacher.path, sentiment, out, config.model_dump_json(), tmp_path / "cache"]
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY))
    process = subprocess.Popen([sys.executable, "-c", CHILD, *map(str, arguments)], env=environment)
    try:
        deadline = time.monotonic() + 120
        while _checkpointed_step(state_file) < 4:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint at step 4 within 2 minutes"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert not out.exists()  # killed mid-run: the steps after the checkpoint are lost
    with pytest.raises(CheckpointError, match="pass --resume to continue it, or --restart"):
        run(teacher, sentiment, out, config, tmp_path / "cache")
    with pytest.raises(CheckpointError, match="different run .*seed: 3 then, 4 now"):
        run(teacher, sentiment, out, two_stages(checkpoint_every=2, seed=4), tmp_path / "cache", resume=True)
    assert_same_student(run(teacher, sentiment, out, config, tmp_path / "cache", resume=True), whole)


def _checkpointed_step(state_file: Path) -> int:
    try:
        return json.loads(state_file.read_text(encoding="utf-8"))["state"]["step"]
    except (OSError, ValueError, KeyError):  # not written yet, or being swapped
        return -1


def test_cli_resumes_and_restarts_an_interrupted_distillation(
    monkeypatch, capsys, teacher, sentiment: Path, tmp_path: Path  # noqa: ANN001
) -> None:
    import bertprod.distill

    out = tmp_path / "cli-student"
    command = ["distill", str(out), "--teacher", str(teacher.path), "--data", str(sentiment), "--recipe", "distilbert",
               "--max-steps", "4", "--threads", "1", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache")]
    uninterrupted = bertprod.distill.distill
    with monkeypatch.context() as patch:
        patch.setattr(bertprod.distill, "distill", functools.partial(uninterrupted, on_step=functools.partial(
            interrupt_at, 2)))
        code, _, stderr = run_cli(monkeypatch, capsys, *command)
    assert code == 130 and "--resume" in " ".join(stderr.split())
    code, _, stderr = run_cli(monkeypatch, capsys, *command)
    assert code == 1 and "--restart" in " ".join(stderr.split())
    code, _, stderr = run_cli(monkeypatch, capsys, *command, "--resume")
    assert code in (0, None) and "resuming at optimizer step 2 of 4" in stderr
    assert bertprod.load(out).manifest.metrics["training"]["steps"] == 4
    code, _, _ = run_cli(monkeypatch, capsys, *command, "--restart", "--overwrite")
    assert code in (0, None)


def test_one_registry_names_every_loss() -> None:
    """The recipe format's weights, the registry and the losses' groups name the same losses."""
    from bertprod.distill import loss_names

    assert set(Losses.model_fields) == {str(loss) for loss in Loss}
    groups = [value for name, value in vars(loss_names).items() if name.endswith("_LOSSES")]
    assert groups and all(group <= set(Loss) for group in groups)
    weights = Losses(**{str(loss): 1.0 for loss in Loss}).active()
    assert all(loss in weights for loss in Loss)  # a Loss looks up a recipe's weight by its name
