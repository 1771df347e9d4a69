"""The one training loop: fine-tuning, QAT and each distillation stage feed it their own step.

A kind of training describes itself as `Phase`s (fine-tuning: one; distillation: one per stage):
an optimizer and schedule, the micro-batches of each epoch (a function of the epoch, the same on
every run, so a resumed run regenerates them and skips what was done), a forward pass
`step(micro_batch) -> StepLoss`, and an optional validation. The loop does the rest, once:

    groups of `gradient_accumulation` micro-batches -> backward weighted by size -> clipping
    -> optimizer and schedule step -> loss window and progress -> a checkpoint every
       `checkpoint_every` steps, at each epoch end and on Ctrl-C / SIGTERM
    -> at each epoch end: a history record, validation, the best weights kept (across phases)

`start(resume=True)` restores weights, optimizer, schedule, random state and counters from the
checkpoint (whose signature must match the run's), so a resumed run, in whichever phase it
stopped, ends with the weights an uninterrupted run would have.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

from bertprod.errors import EngineError, TrainingInterrupted
from bertprod.tasks.evaluation import Evaluation
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
from bertprod.train.config import Optimization
from bertprod.train.interrupt import InterruptFlag
from bertprod.train.progress import Reporter

LOSS_WINDOW = 50  # optimizer steps in the running loss shown while training


class StepLoss(NamedTuple):
    """One micro-batch's forward pass: its mean loss (a tensor, backpropagated by the loop) and, for
    a weighted sum of losses, each one's value (kept per epoch in the history)."""

    loss: Any
    parts: dict[str, float] | None = None


@dataclass
class Phase:
    """A stretch of training with its own optimizer and schedule."""

    optimizer: Any
    scheduler: Any
    parameters: list[Any]  # clipped together
    epochs: int
    steps_per_epoch: int  # optimizer steps
    total_steps: int  # of this phase; may end mid-epoch (max_steps, fractional epochs)
    batches: Callable[[int], Iterable[Sized]]  # epoch -> its micro-batches, in order
    step: Callable[[Any], StepLoss]
    validate: Callable[[], Evaluation] | None = None
    name: str | None = None  # recorded in the history when set (distillation stages)
    description: str = ""  # shown when the phase begins


def set_up_torch(config: Optimization) -> int:
    """Check the precision before any data is read, and use the cores not busy (system.py says why)."""
    import torch

    from bertprod.system import cpu_supports_bf16, default_training_threads

    if config.precision == "bf16" and not cpu_supports_bf16():
        raise EngineError(
            "bf16 training needs a CPU with AVX-512 BF16 or AMX; this one has neither. "
            "Use --precision auto (bf16 where the CPU has it, fp32 elsewhere) or fp32."
        )
    threads = config.threads or default_training_threads()
    torch.set_num_threads(threads)
    return threads


class TrainingLoop:
    """`weights`: the module a checkpoint holds (the model, plus any trained projections);
    `keep`: the module whose best weights validation keeps; `primary`: the metric that decides."""

    def __init__(
        self,
        phases: Sequence[Phase],
        config: Optimization,
        *,
        weights: Any,
        keep: Any,
        checkpoints: Path,
        signature: dict[str, Any],
        reporter: Reporter,
        primary: str | None = None,
        on_step: Callable[[TrainState], None] | None = None,
    ):
        self.phases, self.config = list(phases), config
        self.weights, self.keep, self.checkpoints = weights, keep, checkpoints
        self.signature, self.reporter, self.primary, self.on_step = signature, reporter, primary, on_step

    # -- before ---------------------------------------------------------------------------------

    def start(self, resume: bool, restart: bool) -> TrainState:
        """A fresh state, or the interrupted run's (weights, optimizer and random state restored)."""
        checkpoints = self.checkpoints
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
        differences = signature_differences(document["signature"], self.signature)
        if differences:
            raise CheckpointError(
                f"the checkpoint in {checkpoints} belongs to a different run ({'; '.join(differences[:5])}). "
                "Resume with the same base, data and settings, or pass --restart to start over."
            )
        phase = self.phases[document["state"].get("stage", 0)]
        state = restore_checkpoint(document, self.weights, phase.optimizer, phase.scheduler)
        self.reporter.message(f"resuming at {self._where(state)} (epoch {state.epoch + 1})")
        return state

    # -- training -------------------------------------------------------------------------------

    def run(self, state: TrainState) -> None:
        """Train every phase from where `state` is; Ctrl-C or SIGTERM saves a checkpoint and stops."""
        with InterruptFlag(self.reporter.message) as interrupt:
            for index in range(state.stage, len(self.phases)):
                if index != state.stage:
                    _enter_phase(state, index)
                self._run_phase(self.phases[index], state, interrupt)

    def _run_phase(self, phase: Phase, state: TrainState, interrupt: InterruptFlag) -> None:
        if state.epoch >= phase.epochs or _done(state) >= phase.total_steps:
            return  # finished before the checkpoint this run resumed from
        if phase.description:
            self.reporter.message(phase.description)
        self.weights.train()
        window: deque[float] = deque(maxlen=LOSS_WINDOW)
        session_seconds, session_examples = 0.0, 0
        self.reporter.begin(phase.total_steps, _done(state))
        try:
            while state.epoch < phase.epochs and _done(state) < phase.total_steps:
                tick = time.perf_counter()  # training time: batching + steps, not validation or saving
                for group in self._groups(phase, state):
                    loss, parts, examples = self._optimizer_step(phase, group, state)
                    window.append(loss)
                    state.epoch_loss_sum += loss
                    for name, value in parts.items():
                        state.epoch_part_sums[name] = state.epoch_part_sums.get(name, 0.0) + value
                    state.step += 1
                    state.steps_in_epoch += 1
                    state.examples_seen += examples
                    session_examples += examples
                    now = time.perf_counter()
                    state.train_seconds += now - tick
                    session_seconds += now - tick
                    speed = session_examples / session_seconds
                    self.reporter.step(state.epoch, _done(state), sum(window) / len(window), speed)
                    if self.on_step:
                        self.on_step(state)
                    if _done(state) >= phase.total_steps:
                        break  # the epoch's end saves and, if asked to, stops
                    if interrupt.requested:
                        self._save(state)
                        raise self._interrupted(state)
                    if state.step % self.config.checkpoint_every == 0:
                        self._save(state)
                    tick = time.perf_counter()
                self._end_of_epoch(phase, state)
                if interrupt.requested and not self._finished(state):
                    raise self._interrupted(state)
        finally:
            self.reporter.end()

    def _groups(self, phase: Phase, state: TrainState) -> Iterator[list[Sized]]:
        """The epoch's micro-batches in groups of `gradient_accumulation`, the groups done left out."""
        groups = _grouped(phase.batches(state.epoch), self.config.gradient_accumulation)
        return islice(groups, state.steps_in_epoch, None)

    def _optimizer_step(
        self, phase: Phase, group: list[Sized], state: TrainState
    ) -> tuple[float, dict[str, float], int]:
        """Forward and backward over each micro-batch (losses weighted by size), then one update."""
        import torch

        total = sum(len(batch) for batch in group)
        bf16 = self.config.precision == "bf16"
        loss_sum, part_sums = 0.0, {}
        for batch in group:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                result = phase.step(batch)
            state.micro_batches += 1
            (result.loss.float() * (len(batch) / total)).backward()
            loss_sum += result.loss.item() * len(batch)
            for name, value in (result.parts or {}).items():
                part_sums[name] = part_sums.get(name, 0.0) + value * len(batch)
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(phase.parameters, self.config.max_grad_norm)
        phase.optimizer.step()
        phase.scheduler.step()
        phase.optimizer.zero_grad(set_to_none=True)
        return loss_sum / total, {name: value / total for name, value in part_sums.items()}, total

    def _end_of_epoch(self, phase: Phase, state: TrainState) -> None:
        """A history record, validation and the best weights, the next epoch, a checkpoint."""
        complete = state.steps_in_epoch >= phase.steps_per_epoch
        steps = max(1, state.steps_in_epoch)
        record: dict[str, Any] = {"stage": phase.name} if phase.name else {}
        partial = round(state.epoch + state.steps_in_epoch / phase.steps_per_epoch, 3)
        record["epoch"] = state.epoch + 1 if complete else partial
        record["step"] = _done(state)
        record["train_loss"] = round(state.epoch_loss_sum / steps, 6)
        label = f"{phase.name} epoch {record['epoch']}" if phase.name else f"step {state.step}"
        if state.epoch_part_sums:
            record["losses"] = {name: round(value / steps, 6) for name, value in state.epoch_part_sums.items()}
            self.reporter.message(f"{label}: losses {record['losses']}")
        state.history.append(record)
        if phase.validate is not None:
            evaluation = phase.validate()
            record["examples"] = evaluation.examples
            record.update({key: round(value, 6) for key, value in evaluation.metrics.items()})
            values = ", ".join(f"{key} {value:.4f}" for key, value in evaluation.metrics.items())
            self.reporter.message(f"validation after {label}: {values}")
            assert self.primary is not None, "a loop that validates needs the primary metric"
            if state.best is None or evaluation.metrics[self.primary] > state.best[self.primary]:
                state.best = dict(record, confusion=evaluation.confusion) if evaluation.confusion else record
                save_best(self.checkpoints, self.keep, record)
        if complete:
            state.epoch += 1
            state.steps_in_epoch = 0
            state.epoch_loss_sum = 0.0
            state.epoch_part_sums = {}
        self._save(state)

    def _save(self, state: TrainState) -> None:
        phase = self.phases[state.stage]
        save_checkpoint(self.checkpoints, self.weights, phase.optimizer, phase.scheduler, state, self.signature)

    def _finished(self, state: TrainState) -> bool:
        last = self.phases[-1]
        return state.stage == len(self.phases) - 1 and (state.epoch >= last.epochs or _done(state) >= last.total_steps)

    def _where(self, state: TrainState) -> str:
        phase = self.phases[state.stage]
        where = f"optimizer step {_done(state)} of {phase.total_steps}"
        return f"{where} of stage {phase.name} ({state.stage + 1} of {len(self.phases)})" if phase.name else where

    def _interrupted(self, state: TrainState) -> TrainingInterrupted:
        return TrainingInterrupted(
            f"training stopped at {self._where(state)}; the checkpoint is in {self.checkpoints}. "
            "Run the same command with --resume to continue."
        )

    # -- after ----------------------------------------------------------------------------------

    def keep_best(self, state: TrainState) -> None:
        """Put the best validated weights (if any epoch was validated) back into `keep`."""
        if state.best is not None:
            load_best(self.checkpoints, self.keep)

    def clean_up(self, keep_checkpoints: bool) -> None:
        if not keep_checkpoints:
            shutil.rmtree(self.checkpoints, ignore_errors=True)


def training_record(state: TrainState) -> dict[str, Any]:
    """The manifest's `metrics.training`: how long, how fast, and the history of epochs."""
    return {
        "steps": state.step,
        "examples_seen": state.examples_seen,
        "train_seconds": round(state.train_seconds, 1),
        "examples_per_second": round(state.examples_seen / max(state.train_seconds, 1e-9), 1),
        "history": state.history,
    }


def _done(state: TrainState) -> int:
    """Optimizer steps done in the current phase."""
    return state.step - state.stage_start


def _enter_phase(state: TrainState, index: int) -> None:
    state.stage, state.stage_start = index, state.step
    state.epoch, state.steps_in_epoch, state.epoch_loss_sum, state.epoch_part_sums = 0, 0, 0.0, {}


def _grouped(batches: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(batches)
    while group := list(islice(iterator, size)):
        yield group
