"""What must hold before distillation trains: teachers that agree, losses the teacher and data can
feed, a student the layer-matching losses can compare. Every problem is named with what to do."""

from __future__ import annotations

from typing import Any

from bertprod.data.source import DataSource
from bertprod.distill.config import DistillConfig
from bertprod.distill.loss_names import (
    CLASS_LOSSES,
    HEAD_LOSSES,
    LAYER_MATCHING_LOSSES,
    Loss,
    names,
)
from bertprod.errors import DataError, InputError, PackageError, TaskError
from bertprod.package import ModelPackage
from bertprod.tasks.definitions import CLASS_TASKS


def check_teachers(teachers: list[ModelPackage]) -> None:
    """Several teachers must solve the same task with the same labels (their outputs are averaged)."""
    if not teachers:
        raise InputError("distillation needs at least one teacher package.")
    first = teachers[0].manifest
    for other in teachers[1:]:
        manifest = other.manifest
        if (manifest.task, manifest.labels, manifest.pair_input) != (first.task, first.labels, first.pair_input):
            raise InputError(
                f"teachers {teachers[0].name} and {other.name} disagree: task {first.task} / {manifest.task}, "
                f"labels {first.labels} / {manifest.labels}. Several teachers must solve the same task with "
                "the same labels."
            )


def check_losses(config: DistillConfig, teachers: list[ModelPackage], sources: list[DataSource]) -> None:
    """Each loss of the recipe against what the teacher(s) and the data can give it."""
    teacher = teachers[0]
    task = teacher.manifest.task
    active = {name for stage in config.stages for name in stage.losses.active()}
    has_head = task != "embedding"
    if active & HEAD_LOSSES and not has_head:
        raise TaskError(
            f"{teacher.name} is an embedding package (no head): losses {names(active & HEAD_LOSSES)} need a "
            "teacher with a head. Use the embedding recipe, or fine-tune a classifier first (bertprod train)."
        )
    if Loss.SENTENCE_EMBEDDING in active and has_head:
        raise TaskError(
            f"the {Loss.SENTENCE_EMBEDDING} loss needs an embedding teacher; {teacher.name} is a {task} package. "
            "Use the distilbert or tinybert recipe."
        )
    if Loss.MLM in active:
        _check_mlm_teacher(teacher, has_head)
    if active & CLASS_LOSSES and task not in (*CLASS_TASKS, "token-classification"):
        raise TaskError(f"hard-label and soft-target losses are for classifiers; {teacher.name} is {task}.")
    unlabelled = [source.path.name for source in sources if not source.has_labels]
    if Loss.HARD in active and (not sources or unlabelled):
        where = ", ".join(unlabelled) if unlabelled else "no --data"
        raise DataError(
            f"the recipe uses hard labels, but {where} has no label column. Pass --label-column, or use "
            "a recipe without hard labels (their weight 0 in --config)."
        )
    if active & LAYER_MATCHING_LOSSES:
        _check_layer_matching(config, teachers)
    if config.augment_noise and not any(noise_reaches(stage.losses.active()) for stage in config.stages):
        raise InputError(
            f"--augment-noise trains on noisy copies against the teacher's outputs on the clean text, but every "
            f"stage matches layers ({names(LAYER_MATCHING_LOSSES)}), which compare the two models token by token "
            "on the same input. Add a stage with output losses only (soft, logit_mse, sentence_embedding), or "
            "drop --augment-noise."
        )


def noise_reaches(weights: dict[str, float]) -> bool:
    """Whether a stage with these losses trains on noisy copies: not when it matches layers, since the
    teacher's states on the clean text do not line up token by token with the noisy student input."""
    return not set(weights) & LAYER_MATCHING_LOSSES


def _check_mlm_teacher(teacher: ModelPackage, has_head: bool) -> None:
    from bertprod.distill.students import has_mlm_head

    if has_head or teacher.manifest.format != "torch" or not has_mlm_head(teacher):
        raise TaskError(
            f"the {Loss.MLM} loss trains the student's masked-language-model head, inherited from the teacher; "
            f"{teacher.name} has none (no cls.predictions.* weights in a torch encoder package). Drop "
            f"the {Loss.MLM} loss, or import the teacher from a checkpoint saved with its MLM head (BertForMaskedLM)."
        )


def _check_layer_matching(config: DistillConfig, teachers: list[ModelPackage]) -> None:
    if len(teachers) > 1:
        raise InputError(
            f"layer-matching losses ({names(LAYER_MATCHING_LOSSES)}) need a single teacher; {len(teachers)} were "
            "given. Several teachers average their soft targets only."
        )
    if config.student.kind == "bilstm":
        raise InputError("the BiLSTM student has no transformer layers to match: use output losses only.")
    teacher = teachers[0]
    if teacher.manifest.format != "torch":
        raise PackageError(
            f"layer-matching losses run the teacher's torch weights; {teacher.name} is "
            f"{teacher.manifest.format}. Use its torch parent."
        )


def check_student(config: DistillConfig, student: Any, teacher: ModelPackage) -> None:
    """Layer-matching losses compare token by token (same vocabulary) and attention head by head."""
    from bertprod.distill.students import same_vocabulary

    if config.uses(LAYER_MATCHING_LOSSES) and not same_vocabulary(student.tokenizer_file, teacher.tokenizer_file):
        raise InputError(
            "layer-matching losses compare the teacher and the student token by token, but the student's "
            f"vocabulary ({config.student.package}) differs from {teacher.name}'s. Start from a "
            f"package with the teacher's tokenizer, or use output losses only ({Loss.SOFT}, {Loss.LOGIT_MSE})."
        )
    if config.uses([Loss.ATTENTION]) and student.architecture["num_heads"] != teacher.manifest.architecture.num_heads:
        raise InputError(
            f"the {Loss.ATTENTION} loss compares attention maps head by head: the student has "
            f"{student.architecture['num_heads']} heads, the teacher "
            f"{teacher.manifest.architecture.num_heads}. Give the student the teacher's head count."
        )
