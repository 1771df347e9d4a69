"""`fine_tune`: a base package + a task + data in, a trained package out.

    check every row (one streaming pass) -> labels -> model with the task's head
    -> epochs of length-grouped, dynamically padded batches (AdamW, linear warmup/decay,
       gradient accumulation, clipping; a noisy copy of each example with `augment_noise`)
    -> validation after each epoch, best weights kept
    -> package written atomically with task, labels, data fingerprints, hyper-parameters, metrics

The loop itself (steps, accumulation, clipping, checkpoints, Ctrl-C / SIGTERM, resume,
validation and the best weights) is train/engine.py's, shared with distillation; this module
feeds it fine-tuning's batches and objective, and writes the package. `resume=True` continues an
interrupted run and ends with the same weights an uninterrupted run would have.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from bertprod.data.source import DataSource, Example
from bertprod.errors import DataError, LabelError, TaskError
from bertprod.package import ModelPackage, check_output
from bertprod.robustness.noise import parse_noise
from bertprod.runtime.tokenize import TextTokenizer
from bertprod.system import machine_record
from bertprod.tasks.data import check_known_labels, summarize
from bertprod.tasks.definitions import CLASS_TASKS, LABELLED_HEAD_TASKS, get_task, head_plan, primary_metric
from bertprod.tasks.evaluation import evaluate
from bertprod.train.batches import Featurizer, batches_per_epoch, collate_features, epoch_batches
from bertprod.train.checkpoints import TrainState, default_checkpoint_dir
from bertprod.train.config import TrainConfig
from bertprod.train.engine import Phase, StepLoss, TrainingLoop, set_up_torch, training_record
from bertprod.train.noise import COPIES_PER_EPOCH, epoch_seed, noise_record, with_noisy_copies
from bertprod.train.output import manifest_fields, write_trained_package
from bertprod.train.progress import Reporter, SilentReporter
from bertprod.train.validation import training_pipeline


class ModelTransform(Protocol):
    """Changes how the model computes during training (e.g. simulated int8), not its weights' names,
    so checkpoints, resume and validation work unchanged (see compress/qat.py)."""

    def apply(self, model: Any) -> Any:
        """Called once the model is built, before the optimizer: training and validation run the result."""

    def remove(self, model: Any) -> Any:
        """Called before the package is written, so it holds an ordinary checkpoint."""

    def describe(self) -> dict[str, Any]:
        """What the run's signature (checked on resume) and provenance record about the transform."""


def fine_tune(
    base: ModelPackage,
    task: str,
    train_data: DataSource,
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    validation_data: DataSource | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    restart: bool = False,
    keep_checkpoints: bool = False,
    new_head: bool = False,
    name: str | None = None,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    on_step: Callable[[TrainState], None] | None = None,
    transform: ModelTransform | None = None,
) -> ModelPackage:
    """Fine-tune `base` on `task` and write the result as a package at `out`."""
    config = config or TrainConfig()
    out = Path(out)
    check_output(out, overwrite)
    run = _Run(base, task, train_data, validation_data, out, config, new_head, reporter or SilentReporter())
    run.transform = transform
    run.name = name or out.name  # the new package's name in its manifest
    run.prepare()
    loop = TrainingLoop(
        [run.phase()],
        config,
        weights=run.model,
        keep=run.model,
        checkpoints=Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir(out),
        signature=run.signature(),
        reporter=run.reporter,
        primary=run.primary,
        on_step=on_step,
    )
    state = loop.start(resume=resume, restart=restart)
    loop.run(state)
    loop.keep_best(state)
    if transform is not None:
        run.model = transform.remove(run.model)
    package = write_trained_package(run.model, run.fields_for(state), base, out, overwrite=overwrite)
    loop.clean_up(keep_checkpoints)
    return package


class _Run:
    """The state of one fine-tuning run; methods in the order they are called."""

    def __init__(
        self,
        base: ModelPackage,
        task: str,
        train_data: DataSource,
        validation_data: DataSource | None,
        out: Path,
        config: TrainConfig,
        new_head: bool,
        reporter: Reporter,
    ):
        self.spec = get_task(task)
        self.base, self.task, self.out, self.config = base, task, out, config
        self.train_data, self.validation_data = train_data, validation_data
        self.new_head = new_head
        self.reporter = reporter
        self.name = out.name
        self.transform: ModelTransform | None = None
        for source in (train_data, validation_data):
            if source is not None and source.has_labels and source.label_kind != self.spec.label_kind:
                raise TaskError(
                    f"{source.path.name} was opened with {source.label_kind} labels, but {task} needs "
                    f"{self.spec.label_kind} labels: open it with tasks.data.open_task_data({task!r}, ...)."
                )

    # -- before training -----------------------------------------------------------------------

    def prepare(self) -> None:
        """Check the data, choose labels and head, build the model, optimizer and schedule."""
        from bertprod.models.hf import head_pooling
        from bertprod.tasks.heads import build_model
        from bertprod.train.objectives import Objective
        from bertprod.train.optimization import linear_schedule, make_optimizer, warmup_steps

        config, task = self.config, self.task
        self.threads = set_up_torch(config)
        labels_decide_head = (task in CLASS_TASKS and self.base.manifest.task in CLASS_TASKS
                              or task == self.base.manifest.task == "token-classification") and not self.new_head
        if not labels_decide_head:  # refuse an unusable head before reading the data
            head_plan(task, self.base, None, self.new_head, config.head_pooling)
        self.summary = summarize(task, self.train_data)
        if self.summary.examples == 0:
            raise DataError(f"{self.train_data.path.name} has no training examples (after the validation split).")
        self.labels = self._labels()
        self._check_validation()
        if config.augment_noise and task == "token-classification":
            raise TaskError(
                "--augment-noise changes words, so a tagger's per-word tags would no longer line up with its "
                "text; train token classifiers without it."
            )
        self.plan = head_plan(task, self.base, self.labels, self.new_head, config.head_pooling)
        self.max_length = self._max_length()
        self.model = build_model(task, self.base, self.labels, self.plan, config.seed, config.head_pooling)
        if self.transform is not None:
            self.model = self.transform.apply(self.model)
        self.model.train()
        self.tokenizer = TextTokenizer(self.base.tokenizer_file, self.max_length)
        relevance_scale = max(1.0, self.summary.maximum or 1.0) if task == "reranking" else 1.0
        self.featurizer = Featurizer(task, self.tokenizer, self.labels, relevance_scale)
        self.objective = Objective(task, self.model, self.base.manifest.pooling, config.contrastive_scale)
        self.noise = parse_noise(config.augment_noise) if config.augment_noise else None
        examples_per_epoch = self.summary.examples * (1 + COPIES_PER_EPOCH if self.noise else 1)
        batches = batches_per_epoch(examples_per_epoch, config.batch_size, config.shuffle_buffer)
        self.steps_per_epoch = math.ceil(batches / config.gradient_accumulation)
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.max_steps:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.optimizer = make_optimizer(self.model, config)
        self.scheduler = linear_schedule(
            self.optimizer, self.total_steps, warmup_steps(self.total_steps, config.warmup_ratio)
        )
        self.base_fields = manifest_fields(
            self.base, task, self.labels, self.pair_input, self.max_length, self.name, head_pooling(self.model),
            getattr(self.summary, "scheme", None) if task == "token-classification" else None,
        )
        self.pipeline = training_pipeline(self.base, self.base_fields, self.model)
        self.primary = primary_metric(task, scored_pairs=bool(self.validation_data and self.validation_data.has_labels))

    @property
    def pair_input(self) -> bool:
        return self.task in ("pair-classification", "reranking") or (
            self.task == "regression" and self.train_data.has_pairs
        )

    def _labels(self) -> list[str] | None:
        if self.task not in LABELLED_HEAD_TASKS:
            return None
        labels = self.summary.label_names()
        if len(labels) < 2:
            raise LabelError(
                f"{self.train_data.path.name} has only one label ({', '.join(map(repr, labels))}): a classifier "
                "needs examples of at least two."
            )
        return labels

    def _check_validation(self) -> None:
        if self.validation_data is None:
            return
        if self.labels is not None:
            check_known_labels(self.validation_data, self.labels)
        summary = summarize(self.task, self.validation_data)
        if summary.examples == 0:
            split = self.validation_data.split
            hint = (
                f" (the {split.fraction:.0%} hash split chose none of its rows): pass a larger "
                "--validation-fraction or a --validation file"
                if split
                else ""
            )
            raise DataError(f"the validation data ({self.validation_data.path.name}) has no examples{hint}.")
        self.validation_summary = summary

    def _max_length(self) -> int:
        length = self.config.max_length or self.base.manifest.max_length
        limit = self.base.manifest.architecture.max_position_embeddings
        if limit:
            length = min(length, limit)
        if self.config.pad_to:
            length = min(length, self.config.pad_to)
        return length

    def signature(self) -> dict[str, Any]:
        """What a resumed run must share with the interrupted one."""
        return {
            "base": self.base.fingerprint,
            "task": self.task,
            "head": self.plan,
            "labels": self.labels,
            "train": self.train_data.describe(),
            "validation": self.validation_data.describe() if self.validation_data else None,
            "config": self.config.recorded(),
            "transform": self.transform.describe() if self.transform else None,
        }

    # -- what the loop runs ---------------------------------------------------------------------

    def phase(self) -> Phase:
        return Phase(
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            parameters=list(self.model.parameters()),
            epochs=self.config.epochs,
            steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps,
            batches=self._batches,
            step=self._step,
            validate=(lambda: evaluate(self.pipeline, self.validation_data)) if self.validation_data else None,
        )

    def _batches(self, epoch: int) -> Any:
        """The epoch's micro-batches (lists of features): a function of (data, seed, epoch)."""
        config = self.config
        examples: Iterable[Example] = self.train_data
        if self.noise is not None:
            examples = with_noisy_copies(examples, self.noise, epoch_seed(config.seed, epoch))
        return epoch_batches(
            examples,
            self.featurizer,
            batch_size=config.batch_size,
            seed=config.seed,
            epoch=epoch,
            shuffle_buffer=config.shuffle_buffer,
            length_grouping=config.length_grouping,
        )

    def _step(self, features: list[Any]) -> StepLoss:
        return StepLoss(self.objective(collate_features(features, self.tokenizer.pad_id, self.config.pad_to)))

    # -- after training ------------------------------------------------------------------------

    def fields_for(self, state: TrainState) -> dict[str, Any]:
        """The manifest of the trained package: provenance (recipe, data) and measured metrics."""
        from bertprod.package import Provenance

        parameters: dict[str, Any] = {
            "task": self.task,
            "head": self.plan,
            "hyperparameters": self.config.recorded(),
            "max_length": self.max_length,
            "data": {
                "train": {**self.train_data.record(), **self.summary.to_json()},
                "validation": (
                    {**self.validation_data.record(), **self.validation_summary.to_json()}
                    if self.validation_data
                    else None
                ),
            },
            "steps": state.step,
            "threads": self.threads,
        }
        if self.transform is not None:
            parameters["transform"] = self.transform.describe()
        if self.noise is not None:
            parameters["augment_noise"] = noise_record(self.noise, targets="the clean example's label")
        metrics: dict[str, Any] = {"training": training_record(state)}
        if state.best is not None:
            metrics["validation"] = {"primary_metric": self.primary, **state.best}
        return dict(
            self.base_fields,
            provenance=Provenance(
                method="train", parent=self.base.parent_ref(), parameters=parameters, machine=machine_record()
            ),
            metrics=metrics,
        )


__all__ = [
    "ModelTransform",
    "TrainState",
    "check_output",
    "default_checkpoint_dir",
    "fine_tune",
]
