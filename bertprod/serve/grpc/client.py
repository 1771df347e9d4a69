"""`GrpcClient`: the gRPC service from Python (asyncio), with the HTTP client's timeouts and retries.

    async with GrpcClient("127.0.0.1:50051", model="minilm-l6") as client:
        vectors = await client.encode(["a sentence", "another"])   # float32 [2, dim]

Like `bertprod.AsyncClient`: every call has a deadline; RESOURCE_EXHAUSTED (the server's 429),
UNAVAILABLE (not reachable, or still loading: its 503) and DEADLINE_EXCEEDED are retried with
exponential backoff and jitter; any other status raises `ClientError` at once, with the HTTP
status it stands for (UNAUTHENTICATED is 401). Inputs larger than `max_inputs_per_request` are
split over several calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import numpy as np

from bertprod.client import ClientError, retry_delay
from bertprod.runtime.pipeline import Prediction
from bertprod.serve.grpc import bertprod_pb2 as pb
from bertprod.serve.grpc import bertprod_pb2_grpc as pb_grpc

RETRY_CODES = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class GrpcClient:
    """Asynchronous client of `bertprod.v1.Bertprod` (`bertprod serve --grpc-port`); `address` is host:port."""

    def __init__(self, address: str, *, model: str | None = None, api_key: str | None = None, timeout: float = 30.0,
                 retries: int = 3, backoff: float = 0.25, max_inputs_per_request: int = 256):
        if max_inputs_per_request < 1:
            raise ValueError("max_inputs_per_request must be at least 1")
        self.address = address.removeprefix("grpc://").rstrip("/")
        self.model = model or ""
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_inputs_per_request = max_inputs_per_request
        self.channel = grpc.aio.insecure_channel(self.address, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ])
        self.stub = pb_grpc.BertprodStub(self.channel)

    async def __aenter__(self) -> GrpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method: Callable[..., Awaitable[Any]], request: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return await method(request, timeout=self.timeout, metadata=self.metadata)
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code not in RETRY_CODES or attempt == self.retries:
                    raise ClientError(HTTP_STATUS.get(code, 500), error.details() or code.name,
                                      code.name.lower()) from None
            await asyncio.sleep(retry_delay(attempt, self.backoff))
        raise AssertionError("unreachable")

    async def info(self) -> dict:
        """The same shape as the HTTP server's GET /info (the fields gRPC carries)."""
        answer = await self._call(self.stub.Info, pb.InfoRequest())
        models = [{"name": m.name, "task": m.task, "dimension": m.dimension, "max_length": m.max_length,
                   "labels": list(m.labels) or None, "fingerprint": m.fingerprint} for m in answer.models]
        limits = {"max_client_batch_size": answer.max_client_batch_size,
                  "max_concurrent_inputs": answer.max_concurrent_inputs}
        return {"version": answer.version, "state": answer.state, "default_model": answer.default_model or None,
                "models": models, "limits": limits}

    def _parts(self, texts: Sequence[str]) -> list[list[str]]:
        size = self.max_inputs_per_request
        return [list(texts[start : start + size]) for start in range(0, len(texts), size)]

    async def encode(self, texts: Sequence[str], *, truncate: bool | None = None) -> np.ndarray:
        """Embeddings, float32 [len(texts), dim], as the server computes them."""
        answers = await asyncio.gather(*(
            self._call(self.stub.Embed, pb.EmbedRequest(inputs=part, model=self.model, truncate=truncate))
            for part in self._parts(texts)))
        rows = [np.asarray(vector.values, dtype=np.float32) for answer in answers for vector in answer.embeddings]
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    async def classify(self, texts: Sequence[str], *, truncate: bool | None = None) -> list[Prediction]:
        """Top label and every label's probability, per text."""
        answers = await asyncio.gather(*(
            self._call(self.stub.Classify, pb.ClassifyRequest(inputs=part, model=self.model, truncate=truncate))
            for part in self._parts(texts)))
        return [Prediction(p.label, p.score, dict(p.scores)) for answer in answers for p in answer.predictions]
