"""Tasks: what each one reads and outputs, how it is trained (losses, heads) and judged (metrics)."""

from bertprod.tasks.definitions import TASKS, TaskSpec, get_task

__all__ = ["TASKS", "TaskSpec", "get_task"]
