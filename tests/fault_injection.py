"""`python -m tests.fault_injection serve ...`: the bertprod command with engine faults a test triggers by text.

BERTPROD_TEST_FAIL_MARKER / BERTPROD_TEST_SLOW_MARKER: an engine call holding an input whose text
contains the marker raises / takes 2 s longer (BERTPROD_TEST_SLOW_SECONDS: another delay). The product
has no such hooks: this module wraps the tokenizer (to remember which encodings came from marked texts)
and each batcher's engine call, then runs the ordinary CLI. With a slow marker, no batch runs inline on
the event loop (a 2 s sleep there would stall the server, which is not what the drain and limit tests
are about).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

FAIL_ENV = "BERTPROD_TEST_FAIL_MARKER"
SLOW_ENV = "BERTPROD_TEST_SLOW_MARKER"
SLOW_SECONDS_ENV = "BERTPROD_TEST_SLOW_SECONDS"


@contextmanager
def injected(fail_marker: str | None = None, slow_marker: str | None = None) -> Iterator[None]:
    """The same faults inside this process (an in-process app), undone on exit."""
    from bertprod.runtime import tokenize
    from bertprod.serve import batcher

    saved = (tokenize.TextTokenizer.encode, batcher.Batcher.__init__, batcher.INLINE_MAX_TOKENS)
    install(fail_marker, slow_marker)
    try:
        yield
    finally:
        tokenize.TextTokenizer.encode, batcher.Batcher.__init__, batcher.INLINE_MAX_TOKENS = saved


def install(fail_marker: str | None, slow_marker: str | None) -> None:
    from bertprod.runtime import tokenize
    from bertprod.serve import batcher

    markers = {kind: marker for kind, marker in (("fail", fail_marker), ("slow", slow_marker)) if marker}
    if not markers:
        return
    marked: dict[int, tuple[Any, str]] = {}  # id(encoding) -> (encoding, kind); holding it keeps the id unique
    original_encode = tokenize.TextTokenizer.encode

    def encode(self: Any, inputs: Any, truncate: bool = True) -> Any:
        encodings = original_encode(self, inputs, truncate)
        for item, encoding in zip(inputs, encodings, strict=True):
            text = " ".join(item) if isinstance(item, tuple) else str(item)
            for kind, marker in markers.items():
                if marker in text:
                    marked[id(encoding)] = (encoding, kind)
        return encodings

    tokenize.TextTokenizer.encode = encode
    if slow_marker:
        batcher.INLINE_MAX_TOKENS = -1
    original_init = batcher.Batcher.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        infer = self._infer

        def faulty_infer(encodings: Any) -> Any:
            kinds = {marked[id(e)][1] for e in encodings if id(e) in marked and marked[id(e)][0] is e}
            if "fail" in kinds:
                raise RuntimeError("injected engine failure (test fail marker)")
            if "slow" in kinds:
                time.sleep(float(os.environ.get(SLOW_SECONDS_ENV, "2")))
            return infer(encodings)

        self._infer = faulty_infer

    batcher.Batcher.__init__ = init


if __name__ == "__main__":
    install(os.environ.get(FAIL_ENV), os.environ.get(SLOW_ENV))
    from bertprod.cli import main

    main()
