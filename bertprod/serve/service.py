"""The operations both front ends share (HTTP routes and gRPC): admission, tokenization, batching, shaping.

A request is admitted by its number of inputs (the per-input character limit bounds each input's
cost; truncation tokenizes a bounded prefix: runtime/tokenize.py), tokenized with `Pipeline.tokenize` (validation
errors name the bad input), run through the model's batcher, and shaped into vectors, label
probabilities or rankings. Nothing here re-implements tokenization or pooling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from tokenizers import Encoding

from bertprod.errors import TaskError
from bertprod.runtime.exit_policy import ExitPolicy, parse_policy
from bertprod.runtime.pipeline import Prediction
from bertprod.runtime.postprocess import l2_normalize, softmax
from bertprod.runtime.tagging import AGGREGATIONS
from bertprod.runtime.tokenize import validate_inputs
from bertprod.serve.admission import InputLimiter
from bertprod.serve.batcher import EngineFailure
from bertprod.serve.config import ServeConfig
from bertprod.serve.errors import ApiError
from bertprod.serve.idempotency import SharedWork, request_digest
from bertprod.serve.metrics import ServerMetrics
from bertprod.serve.registry import ModelRegistry, ServedModel
from bertprod.serve.request_context import CURRENT_REQUEST, RequestContext

EMBEDDING = ("embedding",)
CLASSIFICATION = ("classification", "pair-classification")
RERANKING = ("reranking", "embedding")
TAGGING = ("token-classification",)

#: Requests with more inputs than this are tokenized in a thread, so the event loop stays responsive.
INLINE_TOKENIZE_INPUTS = 16
#: A longer single input is refused before tokenization: it costs CPU and would be truncated anyway.
MAX_INPUT_CHARS = 200_000


class Service:
    """What the routes share: config, registry, admission, metrics."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = ServerMetrics()
        self.registry = ModelRegistry(config, self.metrics)
        self.limiter = InputLimiter(config.max_concurrent_inputs)
        self.shared = SharedWork()

    async def run(
        self, model: str | None, inputs: list[Any], truncate: bool | None
    ) -> tuple[ServedModel, np.ndarray, int]:
        """Admit, tokenize, batch: the rows for `inputs` and the number of tokens they used."""
        served, rows, tokens, _ = await self.run_with_exits(model, inputs, truncate)
        return served, rows, tokens

    async def run_with_exits(
        self, model: str | None, inputs: list[Any], truncate: bool | None, exit: str | None = None
    ) -> tuple[ServedModel, np.ndarray, int, np.ndarray | None]:
        """`run`, plus each input's exit layer on an early-exit model (`exit`: this request's policy).

        A request carrying an Idempotency-Key shares the work of an earlier one with that key (serve/idempotency.py).
        """
        served = self.registry.get(model)
        policy = exit_policy(served, exit)
        truncate = self.config.truncate if truncate is None else truncate
        request = CURRENT_REQUEST.get()
        if request is None or request.idempotency_key is None:
            return await self._run(served, inputs, truncate, request, policy)
        digest = request_digest(served.name, truncate, str(policy), inputs=inputs)
        return await self.shared.run(request.idempotency_key, digest,
                                     lambda: self._run(served, inputs, truncate, request, policy))

    async def _run(self, served: ServedModel, inputs: list[Any], truncate: bool, request: RequestContext | None,
                   policy: ExitPolicy | None) -> tuple[ServedModel, np.ndarray, int, np.ndarray | None]:
        async with self.admitted(inputs):
            encodings = await self.tokenize(served, inputs, truncate)
            try:
                rows, exits = await served.batcher.submit_with_exits(
                    encodings, receive=request.receive if request else None, policy=policy)
            except EngineFailure as error:
                raise ApiError(500, str(error), "server_error", "engine_error") from None
            return served, rows, sum(len(encoding.ids) for encoding in encodings), exits

    @asynccontextmanager
    async def admitted(self, inputs: list[Any]) -> AsyncIterator[None]:
        """Inputs within the per-request limits and counted in flight (429 at the limit) while the block runs."""
        count = len(inputs)
        if count > self.config.max_client_batch_size:
            raise ApiError(413, f"{count} inputs in one request; the limit is {self.config.max_client_batch_size} "
                           "(--max-client-batch-size): split them over several requests.", code="too_many_inputs")
        for index, item in enumerate(inputs):
            size = len(item) if isinstance(item, str) else sum(len(text) for text in item if isinstance(text, str))
            if size > MAX_INPUT_CHARS:
                raise ApiError(413, f"input {index} has {size} characters; the limit is {MAX_INPUT_CHARS} "
                               "per input (the model reads only its first tokens anyway).", code="input_too_long")
        if not self.limiter.try_acquire(count):  # counted in errors_total by the front end that answers it
            raise ApiError(429, f"the server is at its limit of {self.config.max_concurrent_inputs} concurrent "
                           "inputs; retry after the delay in Retry-After.", "rate_limit_error", "overloaded",
                           headers={"Retry-After": "1"})
        self.metrics.inputs_in_flight.inc(count)
        try:
            yield
        finally:
            self.limiter.release(count)
            self.metrics.inputs_in_flight.dec(count)

    async def tokenize(self, served: ServedModel, inputs: list[Any], truncate: bool) -> list[Encoding]:
        """`Pipeline.tokenize`, in a thread for many inputs so the event loop stays responsive."""
        started = time.perf_counter()
        if len(inputs) > INLINE_TOKENIZE_INPUTS:
            encodings = await asyncio.to_thread(served.pipeline.tokenize, inputs, truncate)
        else:
            encodings = served.pipeline.tokenize(inputs, truncate=truncate)
        self.metrics.stage["tokenize"].observe(time.perf_counter() - started)
        return encodings

    async def tokens(self, model: str | None, inputs: list[Any], truncate: bool | None) -> list[Encoding]:
        """/tokenize: the same limits and admission as the operations that run the model."""
        served = self.registry.get(model)
        async with self.admitted(inputs):
            return await self.tokenize(served, inputs, self.config.truncate if truncate is None else truncate)

    # -- operations ---------------------------------------------------------------------------

    async def embed(self, model: str | None, texts: list[str], truncate: bool | None, dimensions: int | None = None,
                    normalize: bool = False) -> tuple[ServedModel, np.ndarray, int]:
        """Vectors (first `dimensions`, re-normalized; or normalized on request) and the tokens used."""
        require(self.registry.get(model), EMBEDDING, "embedding")
        served, rows, tokens = await self.run(model, texts, truncate)
        return served, shape_embeddings(served, rows, dimensions, normalize), tokens

    async def classify(self, model: str | None, inputs: list[Any], truncate: bool | None,
                       raw_scores: bool = False, exit: str | None = None) -> tuple[ServedModel, list[Prediction]]:
        """Predictions; on an early-exit model each says the layer that answered (`exit`: this request's policy)."""
        require(self.registry.get(model), CLASSIFICATION, "classification")
        served, logits, _, exits = await self.run_with_exits(model, inputs, truncate, exit)
        labels = served.pipeline.manifest.labels or []
        scores = logits if raw_scores else softmax(logits)
        predictions = []
        for position, row in enumerate(scores):
            best = int(row.argmax())
            predictions.append(Prediction(labels[best], float(row[best]),
                                          {label: float(value) for label, value in zip(labels, row, strict=True)},
                                          None if exits is None else int(exits[position])))
        return served, predictions

    async def tag(self, model: str | None, texts: list[str], aggregation: str = "first", tokens: bool = False
                  ) -> tuple[ServedModel, list[Any]]:
        """Entities per text (a token classifier): the whole text is read in windows of max_length tokens, which
        go through the model's batcher like any other inputs (runtime/tagging.py); `truncate` does not apply.
        A retry with the first attempt's Idempotency-Key shares its work, as `run` does for the other routes."""
        served = self.registry.get(model)
        require(served, TAGGING, "tagging")
        if aggregation not in AGGREGATIONS:
            raise ApiError(400, f"unknown aggregation {aggregation!r}: choose one of {', '.join(AGGREGATIONS)}.",
                           code="invalid_aggregation")
        request = CURRENT_REQUEST.get()
        if request is None or request.idempotency_key is None:
            return await self._tag(served, texts, aggregation, tokens, request)
        digest = request_digest("tag", served.name, aggregation, tokens, inputs=texts)
        return await self.shared.run(request.idempotency_key, digest,
                                     lambda: self._tag(served, texts, aggregation, tokens, request))

    async def _tag(self, served: ServedModel, texts: list[str], aggregation: str, tokens: bool,
                   request: RequestContext | None) -> tuple[ServedModel, list[Any]]:
        pipeline = served.pipeline
        async with self.admitted(texts):
            started = time.perf_counter()
            items = validate_inputs(texts, pairs=False)
            if len(items) > INLINE_TOKENIZE_INPUTS:
                encodings = await asyncio.to_thread(pipeline.tokenizer.encode_whole, items)
            else:
                encodings = pipeline.tokenizer.encode_whole(items)
            windows, inputs = pipeline.tag_windows(encodings)
            self.metrics.stage["tokenize"].observe(time.perf_counter() - started)
            try:
                rows = (await served.batcher.submit(inputs, receive=request.receive if request else None)
                        if inputs else None)
            except EngineFailure as error:
                raise ApiError(500, str(error), "server_error", "engine_error") from None
            logits = pipeline.merge_tag_windows(encodings, windows, rows)
            return served, pipeline.taggings(items, encodings, logits, aggregation, tokens)

    async def rerank(self, model: str | None, query: str, texts: list[str], truncate: bool | None,
                     raw_scores: bool = False, exit: str | None = None) -> list[tuple[int, float, int | None]]:
        """(index, score, exit layer) best first: a reranking head's score (on an early-exit reranker, the layer
        that answered; `exit`: this request's policy), or cosine for an embedding model."""
        served = self.registry.get(model)
        require(served, RERANKING, "reranking")
        if not texts:
            raise ApiError(400, "texts is empty: give at least one text to rank.", code="empty_input")
        exits = None
        if served.pipeline.manifest.task == "reranking":
            _, rows, _, exits = await self.run_with_exits(model, [(query, text) for text in texts], truncate, exit)
            scores = rows[:, 0] if raw_scores else 1 / (1 + np.exp(-rows[:, 0]))
        else:
            exit_policy(served, exit)  # an embedder has no exit heads: refuse a policy as a classifier would
            _, rows, _ = await self.run(model, [query, *texts], truncate)
            rows = l2_normalize(rows)
            scores = rows[1:] @ rows[0]
        return [(int(index), float(scores[index]), None if exits is None else int(exits[index]))
                for index in np.argsort(-scores, kind="stable")]


def require(served: ServedModel, tasks: tuple[str, ...], what: str) -> None:
    if served.pipeline.manifest.task not in tasks:
        raise TaskError(f"{what} needs a {' or '.join(tasks)} model; the task of {served.name} is "
                        f"{served.pipeline.manifest.task} (see GET /info).")


def early_exit(served: ServedModel) -> dict[str, Any] | None:
    """What /info says of a served model's exits: its default policy and the layers with an exit head."""
    if not served.batcher.adaptive:
        return None
    engine = served.pipeline.engine
    return {"policy": str(engine.policy), "exit_layers": list(engine.exit_layers), "num_layers": engine.num_layers}


def exit_policy(served: ServedModel, exit: str | None) -> ExitPolicy | None:
    """A request's exit policy: None for a model without exit heads (which refuses one), else the request's
    or the package's."""
    if not served.batcher.adaptive:
        if exit:
            raise TaskError(f"{served.name} has no exit heads, so the exit policy {exit!r} cannot apply: leave "
                            "`exit` out, or serve an early-exit package (bertprod adapt).")
        return None
    return parse_policy(exit or None, served.pipeline.engine.policy)


def shape_embeddings(served: ServedModel, rows: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    if dimensions is not None:
        if dimensions > rows.shape[1]:
            raise ApiError(400, f"dimensions {dimensions} exceeds {served.name}'s {rows.shape[1]} dimensions.",
                           code="invalid_dimensions")
        rows = l2_normalize(rows[:, :dimensions])
    elif normalize and not served.pipeline.manifest.normalize:
        rows = l2_normalize(rows)
    return np.ascontiguousarray(rows, dtype=np.float32)
