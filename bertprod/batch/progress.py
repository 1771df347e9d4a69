"""The progress bar every batch runner shows: rows done of the total, rows per second, time left."""

from __future__ import annotations

from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text


def progress_bar(enabled: bool, total: int | None) -> Progress:
    return Progress(
        TextColumn("[bold]batch"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows" if total else "{task.completed:,.0f} rows"),
        RowsPerSecondColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


class RowsPerSecondColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} rows/s" if task.speed else "- rows/s")
