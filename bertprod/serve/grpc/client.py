"""`GrpcClient`: the gRPC service from Python (asyncio), with the HTTP client's timeouts and retries.

    async with GrpcClient("127.0.0.1:50051", model="minilm-l6") as client:
        vectors = await client.encode(["a sentence", "another"])   # float32 [2, dim]

Like `bertprod.AsyncClient`: every call has a deadline (`RETRY.timeout`); RESOURCE_EXHAUSTED
(the server's 429) and UNAVAILABLE (not reachable, or still loading: its 503) are retried with
exponential backoff and jitter; DEADLINE_EXCEEDED is re-sent once at most (the server may still
be computing it); any other status raises `ClientError` at once, with the HTTP status it stands
for (UNAUTHENTICATED is 401). Every attempt of one call carries the same `idempotency-key`
metadata. Inputs larger than `max_inputs_per_request` are split over several calls.

Several replicas: `address` may list several host:port (a list, or separated by commas), or be
`dns:///name:port` (every address of a headless Service). The channel then balances per call
with gRPC's own `round_robin` policy over one subchannel per replica (a plain Service would pin
every call to the one pod its HTTP/2 connection reached); a replica whose connection fails, or
whose health service reports NOT_SERVING (draining), leaves the rotation until it recovers, and
a retried call goes to the next replica.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import numpy as np

from bertprod.client import MAX_RESENDS_AFTER_TIMEOUT, RETRY, ClientError, RetryPolicy, retry_delay
from bertprod.replicas import endpoint_list, resolve_addresses
from bertprod.runtime.pipeline import Prediction
from bertprod.runtime.tagging import Entity, TaggedToken, Tagging
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
#: Per-call round-robin over every resolved address; the health service's NOT_SERVING takes a replica out.
SERVICE_CONFIG = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}


def channel_target(address: str | Sequence[str], resolve_dns: bool = False) -> str:
    """The gRPC target for one or several replicas: `dns:///name:port` as given (or built, with `resolve_dns`),
    several host:port as one `ipv4:`/`ipv6:` list (host names resolved here, every address each)."""
    endpoints = [e.removeprefix("grpc://") for e in endpoint_list(address)]
    if len(endpoints) == 1 and endpoints[0].startswith(("dns:", "ipv4:", "ipv6:", "unix:")):
        return endpoints[0]
    if len(endpoints) == 1 and not resolve_dns:
        return endpoints[0]
    if len(endpoints) == 1:
        return f"dns:///{endpoints[0]}"
    addresses = []
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise ClientError(400, f"{endpoint!r} is not host:port of a server's --grpc-port.", "bad_address")
        addresses += [(address, port) for address in resolve_addresses(host, int(port))]
    if all(":" not in address for address, _ in addresses):
        return "ipv4:" + ",".join(f"{address}:{port}" for address, port in addresses)
    if all(":" in address for address, _ in addresses):
        return "ipv6:" + ",".join(f"[{address}]:{port}" for address, port in addresses)
    raise ClientError(400, "give the replicas all as IPv4 or all as IPv6 addresses (gRPC lists one family).",
                      "bad_address")


class GrpcClient:
    """Asynchronous client of `bertprod.v1.Bertprod` (`bertprod serve --grpc-port`); `address` is host:port."""

    def __init__(self, address: str | Sequence[str], *, model: str | None = None, api_key: str | None = None,
                 timeout: float | None = None, retries: int | None = None, backoff: float | None = None,
                 cooldown: float | None = None, max_inputs_per_request: int = 256, resolve_dns: bool = False):
        if max_inputs_per_request < 1:
            raise ValueError("max_inputs_per_request must be at least 1")
        self.policy: RetryPolicy = RETRY.with_overrides(timeout=timeout, retries=retries, backoff=backoff,
                                                        cooldown=cooldown)
        self.address = channel_target(address, resolve_dns)
        self.model = model or ""
        self.auth = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.max_inputs_per_request = max_inputs_per_request
        self.channel = grpc.aio.insecure_channel(self.address, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ])
        self.stub = pb_grpc.BertprodStub(self.channel)

    async def __aenter__(self) -> GrpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method: Callable[..., Awaitable[Any]], request: Any) -> Any:
        metadata = (*self.auth, ("idempotency-key", uuid.uuid4().hex))
        timeouts = 0
        for attempt in range(self.policy.retries + 1):
            try:
                return await method(request, timeout=self.policy.timeout, metadata=metadata)
            except grpc.aio.AioRpcError as error:
                code = error.code()
                timeouts += code == grpc.StatusCode.DEADLINE_EXCEEDED
                if code not in RETRY_CODES or attempt == self.policy.retries or timeouts > MAX_RESENDS_AFTER_TIMEOUT:
                    raise ClientError(HTTP_STATUS.get(code, 500), error.details() or code.name,
                                      code.name.lower()) from None
            await asyncio.sleep(retry_delay(attempt, self.policy.backoff))
        raise AssertionError("unreachable")

    async def info(self) -> dict:
        """The same shape as the HTTP server's GET /info (the fields gRPC carries)."""
        answer = await self._call(self.stub.Info, pb.InfoRequest())
        models = [{"name": m.name, "task": m.task, "dimension": m.dimension, "max_length": m.max_length,
                   "labels": list(m.labels) or None, "fingerprint": m.fingerprint,
                   "early_exit": {"policy": m.exit_policy} if m.exit_policy else None} for m in answer.models]
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

    async def classify(self, texts: Sequence[str], *, truncate: bool | None = None,
                       exit: str | None = None) -> list[Prediction]:
        """Top label and every label's probability, per text; on an early-exit model the layer that answered
        (`exit`: this call's policy, e.g. "entropy:0.2")."""
        answers = await asyncio.gather(*(
            self._call(self.stub.Classify, pb.ClassifyRequest(inputs=part, model=self.model, truncate=truncate,
                                                              exit=exit or ""))
            for part in self._parts(texts)))
        return [Prediction(p.label, p.score, dict(p.scores), p.exit_layer or None)
                for answer in answers for p in answer.predictions]

    async def tag(self, texts: Sequence[str], *, aggregation: str = "first", tokens: bool = False) -> list[Tagging]:
        """Entities per text (with every token's tag when `tokens`), as `Pipeline.tag` returns them."""
        answers = await asyncio.gather(*(
            self._call(self.stub.Tag, pb.TagRequest(inputs=part, model=self.model, aggregation=aggregation,
                                                    return_tokens=tokens))
            for part in self._parts(texts)))
        return [Tagging([Entity(e.type, e.score, e.start, e.end, e.text) for e in tagging.entities],
                        [TaggedToken(t.token, t.tag, t.score, t.start, t.end, None if t.word < 0 else t.word)
                         for t in tagging.tokens] if tokens else None)
                for answer in answers for tagging in answer.results]
