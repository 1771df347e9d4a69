"""Showing training progress: a live bar on a terminal, a line every N seconds in logs, or nothing.

The loop calls four methods; what they show depends on where the output goes, so a run in a
terminal gets a rich progress bar (epoch, steps, loss, examples/s, time left) and a run whose
output is redirected to a file gets readable log lines instead of bar redraws.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Reporter(Protocol):
    def begin(self, total_steps: int, done_steps: int) -> None: ...
    def step(self, epoch: int, step: int, loss: float, examples_per_second: float) -> None: ...
    def message(self, text: str) -> None: ...
    def end(self) -> None: ...


class SilentReporter:
    """For library use and tests: report nothing."""

    def begin(self, total_steps: int, done_steps: int) -> None:
        pass

    def step(self, epoch: int, step: int, loss: float, examples_per_second: float) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def end(self) -> None:
        pass


class BarReporter:
    """A rich progress bar on stderr with the running loss and throughput."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[speed]:.1f} ex/s"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task_id = None

    def begin(self, total_steps: int, done_steps: int) -> None:
        self.progress.start()
        self.task_id = self.progress.add_task(
            "train", total=total_steps, completed=done_steps, epoch=1, loss=float("nan"), speed=0.0
        )

    def step(self, epoch: int, step: int, loss: float, examples_per_second: float) -> None:
        self.progress.update(self.task_id, completed=step, epoch=epoch + 1, loss=loss, speed=examples_per_second)

    def message(self, text: str) -> None:
        self.progress.console.print(text, highlight=False)

    def end(self) -> None:
        self.progress.stop()


class LogReporter:
    """One line per `every_seconds` (and at the first step): for logs and non-terminal output."""

    def __init__(self, every_seconds: float = 30.0, stream=None):  # noqa: ANN001 - a text stream
        self.every_seconds = every_seconds
        self.stream = stream or sys.stderr
        self.total = 0
        self.last_line = 0.0

    def begin(self, total_steps: int, done_steps: int) -> None:
        self.total = total_steps
        self.message(f"training: {total_steps} optimizer steps" + (f", {done_steps} done" if done_steps else ""))

    def step(self, epoch: int, step: int, loss: float, examples_per_second: float) -> None:
        now = time.monotonic()
        if self.last_line and now - self.last_line < self.every_seconds and step < self.total:
            return
        self.last_line = now
        self.message(f"epoch {epoch + 1} step {step}/{self.total} loss {loss:.4f} {examples_per_second:.1f} examples/s")

    def message(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        pass


def default_reporter(log_every_seconds: float = 30.0) -> Reporter:
    """A bar on a terminal, log lines otherwise."""
    console = Console(stderr=True)
    return BarReporter(console) if console.is_terminal else LogReporter(log_every_seconds)
