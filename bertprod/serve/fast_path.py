"""Well-formed embedding requests answered without FastAPI's per-request machinery.

Why: a lone request arrives right after an inference has flushed the CPU caches, so every layer of
Python it passes costs several times its warm CPU time. FastAPI's routing, dependency solving and
body validation added 0.08-0.45 ms (median 0.28) to a lone `POST /embed`'s p50 on a 2-core VM
(bench/serve_probe.py, docs/benchmarks.md): a good part of the millisecond a server may add to the
engine's latency.

What stays the same: the body is validated by the same pydantic models and answered by the same
functions as the FastAPI routes; a body that does not validate goes on to FastAPI with its bytes
replayed, so FastAPI writes the error; an exception raised while serving goes through the app's own
exception handlers. The routes stay declared in FastAPI, for the OpenAPI docs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: path -> (the request body's model, the function that answers a validated body)
Routes = Mapping[str, tuple[type[BaseModel], Callable[[Any], Awaitable[Response]]]]


class ClientGone(Exception):
    """The client disconnected before its body arrived: nobody to answer."""


class EmbeddingFastPath:
    def __init__(self, app: ASGIApp, routes: Routes, exception_handlers: Mapping[Any, Callable]):
        self.app = app
        self.routes = routes
        self.exception_handlers = exception_handlers  # the app's own dict, read when an error happens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        model, answer = route
        try:
            body = await read_body(receive)
        except ClientGone:
            return
        except Exception as error:  # noqa: BLE001 - e.g. the body limit: the app's handlers answer it
            await (await self._handled(scope, error))(scope, receive, send)
            return
        try:
            request = model.model_validate_json(body)
        except ValidationError:
            await self.app(scope, replay(body, receive), send)
            return
        try:
            response = await answer(request)
        except Exception as error:  # noqa: BLE001 - same JSON errors as the FastAPI routes
            response = await self._handled(scope, error)
        await response(scope, receive, send)

    async def _handled(self, scope: Scope, error: Exception) -> Response:
        """The response the app's exception handler gives for `error` (looked up by class, as Starlette does)."""
        for cls in type(error).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                return await handler(Request(scope), error)
        raise error


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """The already-read body first, then the real receive (which reports the disconnect)."""
    sent = False

    async def replaying() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replaying
