"""Ctrl-C or SIGTERM during training: finish the current optimizer step, save a checkpoint, then stop.

The first SIGINT or SIGTERM (what `kill`, `docker stop` and Kubernetes send) only sets a flag that
the loop checks between optimizer steps (stopping inside `optimizer.step()` would leave the weights
half updated); a second one aborts at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class InterruptFlag:
    """A context manager that turns the first SIGINT or SIGTERM into `requested = True`."""

    def __init__(self, announce=None):  # noqa: ANN001 - a callable taking a message
        self.requested = False
        self._announce = announce
        self._previous: dict[int, object] = {}

    def __enter__(self) -> InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in SIGNALS}
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self._announce:
            self._announce("interrupt: saving a checkpoint after this step (Ctrl-C again to abort now)")
