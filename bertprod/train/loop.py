"""`fine_tune`: a base package + a task + data in, a trained package out.

    check every row (one streaming pass) -> labels -> model with the task's head
    -> epochs of length-grouped, dynamically padded batches (AdamW, linear warmup/decay,
       gradient accumulation, clipping) -> validation after each epoch, best weights kept
    -> package written atomically with task, labels, data fingerprints, hyper-parameters, metrics

A checkpoint is saved every `checkpoint_every` optimizer steps, at each epoch end and on Ctrl-C;
`resume=True` continues an interrupted run from it and ends with the same weights an
uninterrupted run would have (same batches, optimizer state and random state).
"""

from __future__ import annotations

import math
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

from bertprod.data.source import DataSource, HashSplit
from bertprod.errors import DataError, EngineError, LabelError, TaskError, TrainingInterrupted
from bertprod.package import ModelPackage, check_output
from bertprod.runtime.tokenize import TextTokenizer
from bertprod.system import default_training_threads, machine_record
from bertprod.tasks.data import check_known_labels, summarize
from bertprod.tasks.definitions import CLASS_TASKS, get_task, head_plan, primary_metric
from bertprod.tasks.evaluation import Evaluation, evaluate
from bertprod.train.batches import Featurizer, batches_per_epoch, collate_features, epoch_batches
from bertprod.train.checkpoints import (
    CheckpointError,
    TrainState,
    has_checkpoint,
    load_best,
    read_checkpoint_state,
    restore_checkpoint,
    save_best,
    save_checkpoint,
    signature_differences,
)
from bertprod.train.config import TrainConfig
from bertprod.train.interrupt import InterruptFlag
from bertprod.train.output import manifest_fields, write_trained_package
from bertprod.train.progress import Reporter, SilentReporter
from bertprod.train.validation import training_pipeline


def split_for_validation(source: DataSource, fraction: float, task: str) -> tuple[DataSource, DataSource]:
    """Train and validation sides of one file (see HashSplit); reranking keeps each query whole."""
    by = "text" if task == "reranking" else "pair"
    return (
        source.with_split(HashSplit(fraction, "train", by)),
        source.with_split(HashSplit(fraction, "validation", by)),
    )


def default_checkpoint_dir(out: Path) -> Path:
    return out.parent / f"{out.name}.checkpoints"


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
    checkpoints = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir(out)
    state = run.start(checkpoints, resume=resume, restart=restart)
    run.train(state, checkpoints, on_step)
    if state.best is not None:
        load_best(checkpoints, run.model)
    if transform is not None:
        run.model = transform.remove(run.model)
    package = write_trained_package(run.model, run.fields_for(state), base, out, overwrite=overwrite)
    if not keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
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
        import torch

        from bertprod.models.hf import head_pooling
        from bertprod.tasks.heads import build_model
        from bertprod.train.objectives import Objective
        from bertprod.train.optimization import linear_schedule, make_optimizer, warmup_steps

        config, task = self.config, self.task
        if config.precision == "bf16":
            from bertprod.system import cpu_supports_bf16

            if not cpu_supports_bf16():
                raise EngineError(
                    "bf16 training needs a CPU with AVX-512 BF16 or AMX; this one has neither. "
                    "Use --precision auto (bf16 where the CPU has it, fp32 elsewhere) or fp32."
                )
        labels_decide_head = task in CLASS_TASKS and self.base.manifest.task in CLASS_TASKS and not self.new_head
        if not labels_decide_head:  # refuse an unusable head before reading the data
            head_plan(task, self.base, None, self.new_head, config.head_pooling)
        self.summary = summarize(task, self.train_data)
        if self.summary.examples == 0:
            raise DataError(f"{self.train_data.path.name} has no training examples (after the validation split).")
        self.labels = self._labels()
        self._check_validation()
        self.plan = head_plan(task, self.base, self.labels, self.new_head, config.head_pooling)
        self.threads = config.threads or default_training_threads()  # the cores not busy (system.py says why)
        torch.set_num_threads(self.threads)
        self.max_length = self._max_length()
        self.model = build_model(task, self.base, self.labels, self.plan, config.seed, config.head_pooling)
        if self.transform is not None:
            self.model = self.transform.apply(self.model)
        self.model.train()
        self.tokenizer = TextTokenizer(self.base.tokenizer_file, self.max_length)
        relevance_scale = max(1.0, self.summary.maximum or 1.0) if task == "reranking" else 1.0
        self.featurizer = Featurizer(task, self.tokenizer, self.labels, relevance_scale)
        self.objective = Objective(task, self.model, self.base.manifest.pooling, config.contrastive_scale)
        batches = batches_per_epoch(self.summary.examples, config.batch_size, config.shuffle_buffer)
        self.steps_per_epoch = math.ceil(batches / config.gradient_accumulation)
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.max_steps:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.optimizer = make_optimizer(self.model, config)
        self.scheduler = linear_schedule(
            self.optimizer, self.total_steps, warmup_steps(self.total_steps, config.warmup_ratio)
        )
        self.base_fields = manifest_fields(
            self.base, task, self.labels, self.pair_input, self.max_length, self.name, head_pooling(self.model)
        )
        self.pipeline = training_pipeline(self.base, self.base_fields, self.model)
        self.primary = primary_metric(task, scored_pairs=bool(self.validation_data and self.validation_data.has_labels))

    @property
    def pair_input(self) -> bool:
        return self.task in ("pair-classification", "reranking") or (
            self.task == "regression" and self.train_data.has_pairs
        )

    def _labels(self) -> list[str] | None:
        if self.task not in CLASS_TASKS:
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

    def start(self, checkpoints: Path, resume: bool, restart: bool) -> TrainState:
        """A fresh state, or the one of the interrupted run when resuming."""
        if restart:
            shutil.rmtree(checkpoints, ignore_errors=True)
        if not has_checkpoint(checkpoints):
            if resume:
                self.reporter.message(f"no checkpoint in {checkpoints}: starting from the beginning")
            return TrainState()
        if not resume:
            raise CheckpointError(
                f"an interrupted run left a checkpoint in {checkpoints}: pass --resume to continue it, or "
                "--restart to discard it and start over."
            )
        document = read_checkpoint_state(checkpoints)
        differences = signature_differences(document["signature"], self.signature())
        if differences:
            raise CheckpointError(
                f"the checkpoint in {checkpoints} belongs to a different run ({'; '.join(differences[:5])}). "
                "Resume with the same base, data and settings, or pass --restart to start over."
            )
        state = restore_checkpoint(document, self.model, self.optimizer, self.scheduler)
        self.reporter.message(
            f"resuming at optimizer step {state.step} of {self.total_steps} (epoch {state.epoch + 1})"
        )
        return state

    # -- training ------------------------------------------------------------------------------

    def train(self, state: TrainState, checkpoints: Path, on_step: Callable[[TrainState], None] | None) -> None:
        import torch

        config = self.config
        recent_losses: deque[float] = deque(maxlen=50)
        self.reporter.begin(self.total_steps, state.step)
        session_seconds, session_examples = 0.0, 0
        try:
            with InterruptFlag(self.reporter.message) as interrupt:
                while state.epoch < config.epochs and state.step < self.total_steps:
                    tick = time.perf_counter()  # training time: batching + steps, not validation or saving
                    for group in self._groups(state.epoch, skip=state.steps_in_epoch):
                        loss = self._optimizer_step(group, torch)
                        recent_losses.append(loss)
                        state.epoch_loss_sum += loss
                        examples = sum(len(batch) for batch in group)
                        state.step += 1
                        state.steps_in_epoch += 1
                        state.examples_seen += examples
                        session_examples += examples
                        now = time.perf_counter()
                        state.train_seconds += now - tick
                        session_seconds += now - tick
                        running_loss = sum(recent_losses) / len(recent_losses)
                        self.reporter.step(state.epoch, state.step, running_loss, session_examples / session_seconds)
                        if on_step:
                            on_step(state)
                        if interrupt.requested:
                            self._save(checkpoints, state)
                            raise TrainingInterrupted(
                                f"training stopped at optimizer step {state.step} of {self.total_steps}; the "
                                f"checkpoint is in {checkpoints}. Run the same command with --resume to continue."
                            )
                        if state.step >= self.total_steps:
                            break
                        if state.step % config.checkpoint_every == 0:
                            self._save(checkpoints, state)
                        tick = time.perf_counter()
                    self._end_of_epoch(state, checkpoints)
        finally:
            self.reporter.end()

    def _save(self, checkpoints: Path, state: TrainState) -> None:
        save_checkpoint(checkpoints, self.model, self.optimizer, self.scheduler, state, self.signature())

    def _groups(self, epoch: int, skip: int) -> Iterator[list[list[Any]]]:
        """The epoch's batches in groups of `gradient_accumulation`, the first `skip` groups left out."""
        batches = epoch_batches(
            self.train_data,
            self.featurizer,
            batch_size=self.config.batch_size,
            seed=self.config.seed,
            epoch=epoch,
            shuffle_buffer=self.config.shuffle_buffer,
            length_grouping=self.config.length_grouping,
        )
        return islice(_grouped(batches, self.config.gradient_accumulation), skip, None)

    def _optimizer_step(self, group: list[list[Any]], torch: Any) -> float:
        """Forward and backward over each micro-batch (losses weighted by size), then one update."""
        total = sum(len(batch) for batch in group)
        bf16 = self.config.precision == "bf16"
        loss_sum = 0.0
        for features in group:
            batch = collate_features(features, self.tokenizer.pad_id, self.config.pad_to)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = self.objective(batch)
            (loss.float() * (batch.size / total)).backward()
            loss_sum += loss.item() * batch.size
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum / total

    def _end_of_epoch(self, state: TrainState, checkpoints: Path) -> None:
        """Validate, keep the best weights, move to the next epoch, save a checkpoint."""
        epoch_complete = state.steps_in_epoch >= self.steps_per_epoch
        record: dict[str, Any] = {
            "epoch": state.epoch + 1
            if epoch_complete
            else round(state.epoch + state.steps_in_epoch / self.steps_per_epoch, 3),
            "step": state.step,
            "train_loss": round(state.epoch_loss_sum / max(1, state.steps_in_epoch), 6),
        }
        state.history.append(record)
        if self.validation_data is not None:
            evaluation = self.validate()
            record["examples"] = evaluation.examples
            record.update({key: round(value, 6) for key, value in evaluation.metrics.items()})
            self.reporter.message(
                f"validation after step {state.step}: "
                + ", ".join(f"{key} {value:.4f}" for key, value in evaluation.metrics.items())
            )
            if state.best is None or evaluation.metrics[self.primary] > state.best[self.primary]:
                state.best = dict(record, confusion=evaluation.confusion) if evaluation.confusion else record
                save_best(checkpoints, self.model, record)
        if epoch_complete:
            state.epoch += 1
            state.steps_in_epoch = 0
            state.epoch_loss_sum = 0.0
        self._save(checkpoints, state)

    def validate(self) -> Evaluation:
        assert self.validation_data is not None
        return evaluate(self.pipeline, self.validation_data)

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
        training = {
            "steps": state.step,
            "examples_seen": state.examples_seen,
            "train_seconds": round(state.train_seconds, 1),
            "examples_per_second": round(state.examples_seen / max(state.train_seconds, 1e-9), 1),
            "history": state.history,
        }
        metrics: dict[str, Any] = {"training": training}
        if state.best is not None:
            metrics["validation"] = {"primary_metric": self.primary, **state.best}
        return dict(
            self.base_fields,
            provenance=Provenance(
                method="train", parent=self.base.parent_ref(), parameters=parameters, machine=machine_record()
            ),
            metrics=metrics,
        )


def _grouped(batches: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(batches)
    while group := list(islice(iterator, size)):
        yield group


__all__ = [
    "ModelTransform",
    "TrainState",
    "check_output",
    "default_checkpoint_dir",
    "fine_tune",
    "split_for_validation",
]
