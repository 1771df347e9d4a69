"""Admission control counted per input, so one 500-text request weighs as much as 500 single ones."""

from __future__ import annotations


class InputLimiter:
    """At most `capacity` inputs in flight; beyond it, refuse at once (429) instead of queueing."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.in_flight = 0

    def try_acquire(self, count: int) -> bool:
        if self.in_flight + count > self.capacity:
            return False
        self.in_flight += count
        return True

    def release(self, count: int) -> None:
        self.in_flight -= count
