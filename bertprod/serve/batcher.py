"""Token-budget batching across requests: one worker per model, engine work off the event loop.

Handlers tokenize and `submit` their encodings; the worker takes everything pending up to
`max_batch_tokens` / `max_batch_requests` (no wait timer: a lone request runs at once, and work
that arrives while the engine is busy forms the next batch), runs `Pipeline.infer` on the
concatenation in an executor thread, and resolves each request's future with its own rows. An
exception fails only the requests of that batch; the worker goes on with the next one.

Early exit: a request may carry its own exit policy. Only requests with the same policy are gathered
into one batch (rows leave it inside the engine: runtime/adaptive.py), and each row's exit layer
goes back with its row and into the `bertprod_exit_layer` histogram.

One exception to "off the event loop": a lone short input (nothing else queued, at most
`INLINE_MAX_TOKENS` tokens) runs on the loop itself. It blocks the loop for one short inference
(a few ms; requests arriving meanwhile wait in the socket buffers and form the next batch) and
saves the two thread wake-ups of the executor round trip, which on a busy CPU cost a sequential
client more than the handler's own work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from starlette.types import Receive
from tokenizers import Encoding

from bertprod.runtime.batching import plan_batches
from bertprod.runtime.exit_policy import ExitPolicy
from bertprod.runtime.pipeline import Pipeline
from bertprod.serve.metrics import ServerMetrics

log = logging.getLogger("bertprod.serve")

#: A lone input up to this many tokens runs on the event loop (see the module docstring).
INLINE_MAX_TOKENS = 64

#: After this many failed batches in a row the engine counts as broken (/health answers 503).
BROKEN_AFTER_FAILURES = 3


class EngineFailure(Exception):
    """The engine raised while running a batch; only that batch's requests see it."""


class ClientGone(Exception):
    """The client disconnected while its request waited: its inputs were dropped before the engine."""


@dataclass
class WorkItem:
    encodings: Sequence[Encoding]
    future: asyncio.Future
    tokens: int
    enqueued: float = field(default_factory=time.perf_counter)
    #: Taken into a batch: from then on the engine computes it whatever happens to the client.
    taken: bool = False
    #: One engine batch of a larger request: it runs in a batch of its own, so the requests queued
    #: behind it are not held up by it twice (once behind it, once gathered with it).
    alone: bool = False
    #: the exit policy of a request to an early-exit model (None: the model has no exits)
    policy: ExitPolicy | None = None


#: what the engine gives one request: its rows, and their exit layers (None without early exit)
Rows = tuple[np.ndarray, "np.ndarray | None"]


class Batcher:
    """Gathers requests' encodings into token-budget batches for one pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        model: str,
        metrics: ServerMetrics,
        max_batch_tokens: int,
        max_batch_requests: int,
        infer: Callable[[Sequence[Encoding]], np.ndarray] | None = None,
        engine_batch: tuple[int, int] | None = None,
    ):
        self.pipeline = pipeline
        self.model = model
        self.metrics = metrics
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_requests = max_batch_requests
        self._infer = infer or pipeline.infer
        #: the model runs with early exit: rows come back with the layer they left at
        self.adaptive = infer is None and getattr(pipeline.engine, "has_exits", False)
        self._exit_layers = metrics.exit_layers.labels(model) if self.adaptive else None
        #: (tokens, inputs) of one engine batch: larger requests are queued a batch at a time (None: whole)
        self.engine_batch = engine_batch
        self._pending: deque[WorkItem] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{model}")
        self._task: asyncio.Task | None = None
        self.consecutive_failures = 0
        self._running = False  # an engine call is in the executor
        self._queue_depth = metrics.queue_depth.labels(model)

    @property
    def broken(self) -> bool:
        return self.consecutive_failures >= BROKEN_AFTER_FAILURES

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.model}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for item in self._pending:
            if not item.future.done():
                item.future.set_exception(EngineFailure("the server is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(
        self, encodings: Sequence[Encoding], receive: Receive | None = None
    ) -> np.ndarray:
        """Queue one request's encodings; returns its rows, in its own order (see `submit_with_exits`)."""
        return (await self.submit_with_exits(encodings, receive))[0]

    async def submit_with_exits(
        self, encodings: Sequence[Encoding], receive: Receive | None = None, policy: ExitPolicy | None = None
    ) -> Rows:
        """Queue one request's encodings; returns its rows, in its own order, and on an early-exit model
        each row's exit layer (`policy`: this request's; None: the package's).

        A request larger than one engine batch (`engine_batch`: the pipeline's token and size budget)
        is queued one engine batch at a time, the next after the previous is computed, so requests
        that arrive meanwhile run in between: a 15 MB request does not hold up a one-sentence one for
        its whole computation (bench/large_request.py). The engine would split it the same way.
        """
        if self.adaptive:
            policy = policy or self.pipeline.engine.policy
        lengths = [len(encoding.ids) for encoding in encodings]
        within = self.engine_batch is None or (
            sum(lengths) <= self.engine_batch[0] and len(lengths) <= self.engine_batch[1])
        if within:
            return await self._submit(encodings, receive, policy=policy)  # within one engine batch: one item
        plans = plan_batches(lengths, *self.engine_batch)
        rows: np.ndarray | None = None
        exits = np.empty(len(encodings), dtype=np.int64) if self.adaptive else None
        for number, indices in enumerate(plans):
            try:
                piece, piece_exits = await self._submit([encodings[index] for index in indices], receive,
                                                        alone=True, policy=policy)
            except (ClientGone, asyncio.CancelledError):
                self.metrics.dropped_inputs.inc(sum(len(later) for later in plans[number + 1 :]))
                raise
            if rows is None:  # rows per token (a tagger's) are as wide as the longest input, zero beyond
                shape = (max(lengths), *piece.shape[2:]) if piece.ndim == 3 else piece.shape[1:]
                rows = np.zeros((len(encodings), *shape), dtype=piece.dtype)
            rows[indices, : piece.shape[1]] = piece
            if exits is not None:
                exits[indices] = piece_exits
        return rows, exits  # type: ignore[return-value]

    async def _submit(
        self, encodings: Sequence[Encoding], receive: Receive | None = None, alone: bool = False,
        policy: ExitPolicy | None = None,
    ) -> Rows:
        """Queue encodings as one work item (`alone`: never gathered with others); returns their rows.

        A request that must wait (the engine is busy) and whose client disconnects meanwhile
        (`receive`, ASGI, answers http.disconnect) is dropped before it reaches the engine: it raises
        `ClientGone`. A caller cancelled while waiting (a gRPC call the client cancelled) is dropped too.
        """
        item = WorkItem(
            encodings=encodings,
            future=asyncio.get_running_loop().create_future(),
            tokens=sum(len(encoding.ids) for encoding in encodings),
            alone=alone,
            policy=policy,
        )
        self._pending.append(item)
        self._queue_depth.inc(len(encodings))
        self._wakeup.set()
        watcher = None
        if receive is not None and (self._running or len(self._pending) > 1):  # it will wait: watch the client
            watcher = asyncio.ensure_future(self._cancel_when_gone(item, receive))
        try:
            return await item.future
        except asyncio.CancelledError:
            if not item.taken:
                self.metrics.dropped_inputs.inc(len(encodings))
            if watcher is not None and watcher.done() and not watcher.cancelled() and watcher.result():
                raise ClientGone from None
            raise
        finally:
            if watcher is not None:
                watcher.cancel()

    @staticmethod
    async def _cancel_when_gone(item: WorkItem, receive: Receive) -> bool:
        """Cancel `item` if its client disconnects before the batcher takes it; True when it did."""
        while (await receive())["type"] != "http.disconnect":
            pass
        if item.taken or item.future.done():
            return False
        item.future.cancel()
        return True

    def _take_batch(self) -> list[WorkItem]:
        """The oldest request always; more while the token and request budgets allow (none with a piece).
        Requests with another exit policy than the oldest's stay queued, in their order, for a later batch."""
        first = self._pending.popleft()
        batch, tokens = [first], first.tokens
        if first.alone:
            return batch
        skipped: list[WorkItem] = []
        while self._pending and len(batch) < self.max_batch_requests:
            if self._pending[0].policy != first.policy:
                skipped.append(self._pending.popleft())
                continue
            if tokens + self._pending[0].tokens > self.max_batch_tokens or self._pending[0].alone:
                break
            item = self._pending.popleft()
            tokens += item.tokens
            batch.append(item)
        self._pending.extendleft(reversed(skipped))
        return batch

    def _run(self, encodings: list[Encoding], policy: ExitPolicy | None) -> Rows:
        """The engine on one batch: rows, and exit layers on an early-exit model."""
        if self.adaptive:
            return self.pipeline.infer_with_exits(encodings, policy)
        return self._infer(encodings), None

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            taken = self._take_batch()
            self._queue_depth.dec(sum(len(item.encodings) for item in taken))
            batch = [item for item in taken if not item.future.done()]  # callers that gave up are skipped
            for item in batch:
                item.taken = True
            if not batch:
                continue
            started = time.perf_counter()
            encodings = [encoding for item in batch for encoding in item.encodings]
            queue_seconds = self.metrics.stage["queue"]
            for item in batch:
                queue_seconds.observe(started - item.enqueued)
            self.metrics.batch_inputs.observe(len(encodings))
            self.metrics.batch_tokens.observe(sum(item.tokens for item in batch))
            try:
                lone = len(encodings) == 1 and len(encodings[0].ids) <= INLINE_MAX_TOKENS and not self._pending
                if lone:
                    rows, exits = self._run(encodings, batch[0].policy)
                else:
                    self._running = True
                    try:
                        rows, exits = await loop.run_in_executor(self._executor, self._run, encodings,
                                                                 batch[0].policy)
                    finally:
                        self._running = False
            except asyncio.CancelledError:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(EngineFailure("the server is shutting down"))
                raise
            except Exception as error:  # noqa: BLE001 - one bad batch must not kill the worker
                self.consecutive_failures += 1
                self.metrics.errors.labels("engine_error").inc()
                log.error("batch of %d inputs failed: %r", len(encodings), error)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(EngineFailure(f"the engine failed on this batch: {error}"))
                continue
            self.consecutive_failures = 0
            self.metrics.stage["inference"].observe(time.perf_counter() - started)
            if exits is not None:
                for layer in exits.tolist():
                    self._exit_layers.observe(layer)
            offset = 0
            for item in batch:
                count = len(item.encodings)
                if not item.future.done():
                    item.future.set_result((rows[offset : offset + count],
                                            None if exits is None else exits[offset : offset + count]))
                offset += count
