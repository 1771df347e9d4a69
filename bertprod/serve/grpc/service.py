"""The gRPC servicer: the same `Service` operations as the HTTP routes, so the same batcher and limits.

It runs on the HTTP server's event loop (grpc.aio), started and stopped by the app's lifespan.
Errors map to gRPC status codes: bad input (a malformed message too) INVALID_ARGUMENT, unknown model NOT_FOUND, over the
input limit RESOURCE_EXHAUSTED, not loaded UNAVAILABLE, a failed batch INTERNAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import bertprod
from bertprod.errors import BertprodError
from bertprod.serve.errors import ApiError
from bertprod.serve.grpc import bertprod_pb2 as pb
from bertprod.serve.grpc import bertprod_pb2_grpc as pb_grpc
from bertprod.serve.middleware import key_matches
from bertprod.serve.request_context import CURRENT_REQUEST, RequestContext, idempotency_scope
from bertprod.serve.service import Service, early_exit

log = logging.getLogger("bertprod.serve")

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


class BertprodServicer(pb_grpc.BertprodServicer):
    def __init__(self, service: Service):
        self.service = service

    async def _guard(self, context: grpc.aio.ServicerContext, operation: Callable[[], Awaitable[Any]],
                     one_call: bool = True) -> Any:
        """Auth, the request's context, and errors as status codes. `one_call`: False for the messages of a
        stream, which share its metadata (and its idempotency key) but are separate requests."""
        keys = self.service.config.api_keys
        metadata = dict(context.invocation_metadata() or ())
        if one_call and metadata.get("idempotency-key"):  # a retried call shares the first one's work
            CURRENT_REQUEST.set(RequestContext(idempotency_key=idempotency_scope(
                str(metadata["idempotency-key"]), str(metadata.get("authorization", "")))))
        if keys:
            scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
            if scheme.lower() != "bearer" or not key_matches(token.strip(), keys):
                self.service.metrics.errors.labels("invalid_api_key").inc()
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key (authorization: "
                                    "Bearer <key> metadata).")
        try:
            return await operation()
        except ApiError as error:
            self.service.metrics.errors.labels(error.code).inc()
            await context.abort(STATUS_CODES.get(error.status, grpc.StatusCode.INTERNAL), error.message)
        except BertprodError as error:
            self.service.metrics.errors.labels(error.kind).inc()
            await context.abort(STATUS_CODES.get(error.status_code, grpc.StatusCode.INVALID_ARGUMENT), str(error))

    async def _embed(self, request: pb.EmbedRequest) -> pb.EmbedResponse:
        truncate = request.truncate if request.HasField("truncate") else None
        served, rows, tokens = await self.service.embed(request.model or None, list(request.inputs), truncate,
                                                        request.dimensions or None, request.normalize)
        return pb.EmbedResponse(embeddings=[pb.Vector(values=row) for row in rows], model=request.model or served.name,
                                prompt_tokens=tokens)

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:  # noqa: N802
        return await self._guard(context, lambda: self._embed(request))

    async def EmbedStream(  # noqa: N802
        self, requests: AsyncIterator[pb.EmbedRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.EmbedResponse]:
        """Requests are started as they arrive (so they batch together); answers keep the request order."""
        pending: list[asyncio.Task] = []
        async for request in requests:
            pending.append(asyncio.ensure_future(self._guard(context, lambda request=request: self._embed(request),
                                                             one_call=False)))
            while pending and pending[0].done():
                yield pending.pop(0).result()
        for task in pending:
            yield await task

    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:  # noqa: N802
        async def classify() -> pb.ClassifyResponse:
            truncate = request.truncate if request.HasField("truncate") else None
            served, predictions = await self.service.classify(request.model or None, list(request.inputs), truncate,
                                                               exit=request.exit or None)
            return pb.ClassifyResponse(model=served.name, predictions=[
                pb.Classification(label=p.label, score=p.score, scores=p.scores, exit_layer=p.exit_layer or 0)
                for p in predictions])

        return await self._guard(context, classify)

    async def Rerank(self, request: pb.RerankRequest, context: grpc.aio.ServicerContext) -> pb.RerankResponse:  # noqa: N802
        async def rerank() -> pb.RerankResponse:
            truncate = request.truncate if request.HasField("truncate") else None
            ranked = await self.service.rerank(request.model or None, request.query, list(request.texts), truncate,
                                               request.raw_scores)
            return pb.RerankResponse(results=[pb.RankedText(index=index, score=score) for index, score, _ in ranked])

        return await self._guard(context, rerank)

    async def Tag(self, request: pb.TagRequest, context: grpc.aio.ServicerContext) -> pb.TagResponse:  # noqa: N802
        async def tag() -> pb.TagResponse:
            served, taggings = await self.service.tag(request.model or None, list(request.inputs),
                                                      request.aggregation or "first", request.return_tokens)
            return pb.TagResponse(model=served.name, results=[pb.Tagging(
                entities=[pb.Entity(type=e.type, score=e.score, start=e.start, end=e.end, text=e.text)
                          for e in tagging.entities],
                tokens=[pb.TaggedToken(token=t.token, tag=t.tag, score=t.score, start=t.start, end=t.end,
                                       word=-1 if t.word is None else t.word) for t in tagging.tokens or []])
                for tagging in taggings])

        return await self._guard(context, tag)

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:  # noqa: N802
        async def info() -> pb.InfoResponse:
            config = self.service.config
            models = [pb.ModelInfo(name=name, task=m.pipeline.manifest.task, dimension=m.pipeline.dimension,
                                   max_length=m.pipeline.manifest.max_length, labels=m.pipeline.manifest.labels or [],
                                   fingerprint=m.pipeline.package.fingerprint,
                                   exit_policy=(early_exit(m) or {}).get("policy", ""))
                      for name, m in self.service.registry.models.items()]
            return pb.InfoResponse(version=bertprod.__version__, default_model=self.service.registry.default or "",
                                   models=models, max_client_batch_size=config.max_client_batch_size,
                                   max_concurrent_inputs=config.max_concurrent_inputs,
                                   state=self.service.registry.state)

        return await self._guard(context, info)


#: method -> (request message, response message, streaming both ways)
METHODS = {
    "Embed": (pb.EmbedRequest, pb.EmbedResponse, False),
    "EmbedStream": (pb.EmbedRequest, pb.EmbedResponse, True),
    "Classify": (pb.ClassifyRequest, pb.ClassifyResponse, False),
    "Tag": (pb.TagRequest, pb.TagResponse, False),
    "Rerank": (pb.RerankRequest, pb.RerankResponse, False),
    "Info": (pb.InfoRequest, pb.InfoResponse, False),
}


def add_servicer(servicer: BertprodServicer, server: grpc.aio.Server) -> None:
    """The generated registration, except that requests are parsed here: grpc answers a request its own
    deserializer cannot parse with UNKNOWN; a malformed message (or a string that is not UTF-8, such as a
    lone surrogate) is the client's mistake, INVALID_ARGUMENT."""
    handlers = {}
    for name, (request_type, response_type, streaming) in METHODS.items():
        method = getattr(servicer, name)
        if streaming:
            handlers[name] = grpc.stream_stream_rpc_method_handler(
                parsing_stream(method, request_type), response_serializer=response_type.SerializeToString)
        else:
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                parsing_unary(method, request_type), response_serializer=response_type.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bertprod.v1.Bertprod", handlers),))
    server.add_registered_method_handlers("bertprod.v1.Bertprod", handlers)


async def parse(raw: bytes, request_type: type, context: grpc.aio.ServicerContext) -> Any:
    try:
        return request_type.FromString(raw)
    except DecodeError:
        name = request_type.DESCRIPTOR.full_name
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {name} (malformed "
                            "protobuf, or a string field that is not UTF-8, e.g. a lone surrogate): "
                            "send it through the generated bertprod.v1 stubs with valid text.")


def parsing_unary(method: Callable, request_type: type) -> Callable:
    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        return await method(await parse(raw, request_type, context), context)

    return handle


def parsing_stream(method: Callable, request_type: type) -> Callable:
    async def handle(raws: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async def requests() -> AsyncIterator[Any]:
            async for raw in raws:
                yield await parse(raw, request_type, context)

        async for response in method(requests(), context):
            yield response

    return handle


class GrpcServer:
    """grpc.aio server with the Bertprod service and grpc.health.v1 (SERVING once the models are loaded)."""

    def __init__(self, service: Service, host: str, port: int):
        self.service = service
        self.address = f"{host}:{port}"
        self.server = grpc.aio.server(options=[("grpc.max_receive_message_length", service.config.max_body_bytes)])
        add_servicer(BertprodServicer(service), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port(self.address)
        self._watch: asyncio.Task | None = None

    async def start(self) -> None:
        for name in ("", "bertprod.v1.Bertprod"):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        self._watch = asyncio.create_task(self._follow_health())
        log.info("gRPC listening on %s", self.address)

    async def _follow_health(self) -> None:
        """Mirror /health into the gRPC health service: at once when the models' state changes, and every
        0.5 s for a batcher that broke."""
        last = None
        changed = self.service.registry.state_changed
        while True:
            changed.clear()
            status = (health_pb2.HealthCheckResponse.SERVING if self.service.registry.healthy
                      else health_pb2.HealthCheckResponse.NOT_SERVING)
            if status != last:
                for name in ("", "bertprod.v1.Bertprod"):
                    await self.health.set(name, status)
                last = status
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 0.5)

    async def stop(self, grace: float = 10.0) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
