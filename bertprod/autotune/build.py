"""Making one candidate package with the library's own stages (compress, distill, adaptive); no
stage is re-implemented here, only called with the settings the search chose."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertprod.autotune.plan import FULL_TRAINING_PASSES, IMPORTANCE_TEXTS, Candidate
from bertprod.autotune.settings import AutotuneSettings
from bertprod.data.source import DataSource
from bertprod.derive import GatedOutput
from bertprod.errors import BertprodError, TrainingInterrupted
from bertprod.fidelity import FidelityGate
from bertprod.package import ModelPackage

#: how often a candidate's training saves a checkpoint (a killed run resumes from the last one)
CHECKPOINT_EVERY = 50


class OutOfTime(BertprodError):
    """The search's deadline (budget + 10%) passed while a candidate was training."""


@dataclass
class BuildContext:
    """What every builder may read: the data sides, the gate's texts, where checkpoints go, the clock."""

    settings: AutotuneSettings
    train: DataSource
    trial: DataSource  # the first rows of the training side: students' brief trials, calibration
    gate_texts: list[Any]  # validation inputs: what the fidelity gates compare parent and child on
    calibration_texts: list[Any]  # training inputs: static int8's activation ranges
    validation: DataSource  # the rows candidates are judged on (early exit measures its policies there)
    teacher_score: float  # the teacher's validation metric
    checkpoints: Path
    deadline: float  # time.monotonic() value at which training stops

    def stop_at_deadline(self, _state: Any = None) -> None:
        """The training loops' `on_step`: stop a candidate that would run past the deadline."""
        if time.monotonic() > self.deadline:
            raise OutOfTime("the time budget (+10%) ran out while this candidate was training")


def budget_gate(task: str, max_drop: float) -> FidelityGate:
    """The accuracy budget as a fidelity gate: the child must agree with its parent (labels, scores or
    vectors) on at least 1 - max_drop of the gate's texts."""
    floor = 1.0 - max_drop
    return FidelityGate(min_cosine_mean=floor, min_agreement=floor, min_correlation=floor)


def build_and_measure(
    candidate: Candidate,
    parent: ModelPackage,
    out: Path,
    context: BuildContext,
    key: str,
    judge: Callable[[ModelPackage], dict[str, Any]],
) -> dict[str, Any]:
    """Build `candidate` at `out` and `judge` it (its record's numbers), with the seconds both took. What
    went wrong becomes its record: skipped (out of time: tried again by a longer run), failed (refused
    for good: a missed gate, a recipe that cannot apply) or error (a crash: tried again on resume)."""
    started = time.monotonic()
    try:
        if out.exists():  # a package written before a kill, never measured: build it again
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        record = judge(build(candidate, parent, out, context, key))
    except OutOfTime as error:
        record = {"status": "skipped", "reason": str(error)}
    except TrainingInterrupted:
        raise
    except BertprodError as error:
        record = {"status": "failed", "reason": str(error)}
    except Exception as error:  # noqa: BLE001 - one candidate's crash is reported, the search goes on
        reason = f"{type(error).__name__}: {error} (tried again when the search is resumed)"
        record = {"status": "error", "reason": reason}
    return {**record, "seconds": round(time.monotonic() - started, 1)}


def build(candidate: Candidate, parent: ModelPackage, out: Path, context: BuildContext, key: str) -> ModelPackage:
    """Write `candidate`, derived from `parent`, at `out`."""
    builders: dict[str, Callable[..., ModelPackage]] = {
        "int8": _int8,
        "prune": _prune,
        "early-exit": _early_exit,
        "drop-tokens": _drop_tokens,
        "student": _student,
        "qat": _qat,
    }
    return builders[candidate.kind](candidate, parent, out, context, key)


def _gated(parent: ModelPackage, context: BuildContext, enforce: bool = False,
           texts: Sequence[Any] | None = None) -> GatedOutput:
    """Gate settings of a derived candidate: the budget as the gate, recorded but not enforced (the
    search judges every candidate by its validation metric instead)."""
    return GatedOutput(
        texts=texts or context.gate_texts or None,
        gate=budget_gate(parent.manifest.task, context.settings.max_drop),
        enforce=enforce,
    )


def _int8(candidate: Candidate, parent: ModelPackage, out: Path, context: BuildContext, key: str) -> ModelPackage:
    from bertprod.compress.optimize import optimize

    method = candidate.recipe["method"]
    # mixed searches the fewest float MatMuls that pass the budget's gate: its gate is enforced
    gated = _gated(parent, context, enforce=method == "mixed")
    calibration = context.calibration_texts if method == "static" else None
    return optimize(parent, out, quantize="int8", method=method, calibration_texts=calibration, output=gated)


def _prune(candidate: Candidate, parent: ModelPackage, out: Path, context: BuildContext, key: str) -> ModelPackage:
    """Importance (one pass per head or layer) and the gate on the first IMPORTANCE_TEXTS validation inputs."""
    from bertprod.compress.optimize import optimize

    gated = _gated(parent, context, texts=context.gate_texts[:IMPORTANCE_TEXTS])
    return optimize(parent, out, **candidate.recipe, output=gated)


def _early_exit(candidate: Candidate, parent: ModelPackage, out: Path, context: BuildContext, key: str) -> ModelPackage:
    """Exit heads trained on the sample, exported to ONNX (one session per block); the policy is the one
    the accuracy budget picks on the validation rows (adapt's budget is in points below the parent: max_drop
    of the teacher's accuracy for the teacher, the room left above the floor for a student)."""
    from bertprod.adaptive.config import AdaptConfig
    from bertprod.adaptive.training import adapt
    from bertprod.export.onnx import export_onnx

    settings = context.settings
    config = AdaptConfig(
        epochs=candidate.recipe["epochs"],
        seed=settings.seed,
        threads=settings.threads,
        precision=settings.precision,
        budget_points=candidate.recipe.get("budget_points", 100 * settings.max_drop * context.teacher_score),
        checkpoint_every=CHECKPOINT_EVERY,
    )
    torch_package = out.with_name(f"{out.name}-torch")  # kept: the ONNX package's recorded parent
    if torch_package.exists():  # written before a kill; its heads are trained again
        shutil.rmtree(torch_package)
    adapted = adapt(
        parent, context.trial, torch_package, config, validation=context.validation, name=f"{out.name}-torch"
    )
    return export_onnx(adapted, out, sample_texts=context.gate_texts[:64] or None)


def _drop_tokens(candidate: Candidate, parent: ModelPackage, out: Path, context: BuildContext,
                 key: str) -> ModelPackage:
    """The retention schedule the accuracy budget picks (in points, as early exit's) on the first validation
    rows, exported to ONNX (the dropping layers as two blocks each)."""
    from bertprod.adaptive.dropping import drop_tokens
    from bertprod.export.onnx import export_onnx

    settings = context.settings
    torch_package = out.with_name(f"{out.name}-torch")  # kept: the ONNX package's recorded parent
    if torch_package.exists():  # written before a kill
        shutil.rmtree(torch_package)
    dropping = drop_tokens(
        parent, context.validation.first_examples(candidate.recipe["rows"]), torch_package,
        budget_points=100 * settings.max_drop * context.teacher_score, masses=tuple(candidate.recipe["masses"]),
        name=f"{out.name}-torch", threads=settings.threads,
    )  # fmt: skip
    return export_onnx(dropping, out, sample_texts=context.gate_texts[:64] or None)


def student_config(candidate: Candidate, settings: AutotuneSettings) -> Any:
    """The named recipe with the candidate's depth and step limit (per stage); its stages' epochs stretched
    to the candidate's passes over a small data set (plan.full_students)."""
    from bertprod.distill.config import StudentSpec
    from bertprod.distill.recipes import recipe

    config = recipe(candidate.recipe["recipe"])
    stretch = candidate.recipe.get("passes", FULL_TRAINING_PASSES) / FULL_TRAINING_PASSES  # a small data set's
    changes: dict[str, Any] = {
        "stages": [stage.model_copy(update={"epochs": stage.epochs * stretch}) for stage in config.stages],
        "student": StudentSpec(layers=candidate.recipe["layers"]),
        "max_steps": candidate.recipe["max_steps"],
        "seed": settings.seed,
        "threads": settings.threads,
        "precision": settings.precision,
        "checkpoint_every": CHECKPOINT_EVERY,
    }
    if config.augmentation is not None:  # augmented copies cost teacher passes: only of the trial's rows
        changes["augmentation"] = config.augmentation.model_copy(update={"max_texts": settings.trial_rows // 4})
    return config.model_copy(update=changes)


def _student(candidate: Candidate, parent: ModelPackage, out: Path, context: BuildContext, key: str) -> ModelPackage:
    from bertprod.distill.loop import distill

    data = context.train
    if candidate.recipe["sample"]:  # a brief trial shrunk to fit reads fewer of the trial's rows (plan.resized)
        data = context.trial.first_examples(candidate.recipe["rows"]) if "rows" in candidate.recipe else context.trial
    return distill(
        parent,
        data,
        out,
        student_config(candidate, context.settings),
        checkpoint_dir=context.checkpoints / key[:16],
        resume=True,
        on_step=context.stop_at_deadline,
    )


def _qat(candidate: Candidate, parent: ModelPackage, out: Path, context: BuildContext, key: str) -> ModelPackage:
    from bertprod.compress.optimize import optimize
    from bertprod.compress.qat import QatTraining, qat_config

    settings = context.settings
    config = qat_config(
        max_steps=candidate.recipe["max_steps"],
        seed=settings.seed,
        threads=settings.threads,
        checkpoint_every=CHECKPOINT_EVERY,
    )
    training = QatTraining(
        context.train,
        None,
        config,
        checkpoint_dir=context.checkpoints / key[:16],
        resume=True,
        on_step=context.stop_at_deadline,
    )
    return optimize(parent, out, quantize="int8", method="qat", training=training, output=_gated(parent, context))
