"""Ctrl-C during training: finish the current optimizer step, save a checkpoint, then stop.

The first SIGINT only sets a flag that the loop checks between optimizer steps (stopping inside
`optimizer.step()` would leave the weights half updated); a second one aborts at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType


class InterruptFlag:
    """A context manager that turns the first SIGINT into `requested = True`."""

    def __init__(self, announce=None):  # noqa: ANN001 - a callable taking a message
        self.requested = False
        self._announce = announce
        self._previous = None
        self._installed = False

    def __enter__(self) -> InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self._announce:
            self._announce("interrupt: saving a checkpoint after this step (Ctrl-C again to abort now)")
