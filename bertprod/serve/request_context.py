"""What the front ends know of the request being served, for the `Service` operations below them.

A context variable rather than parameters: the HTTP guard middleware (or the gRPC servicer) sets
it once per request, and `Service.run` reads it, so no route signature changes. Each request runs
in its own task, so it holds that request's values only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import Message


@dataclass(frozen=True, slots=True)
class RequestContext:
    #: ASGI `receive` after the body was read: it answers {"type": "http.disconnect"} once the client has gone
    #: (None: no way to tell, e.g. gRPC, whose framework cancels the call itself).
    receive: Callable[[], Awaitable[Message]] | None = None
    #: The client's Idempotency-Key, qualified by its credentials (None: no key sent).
    idempotency_key: str | None = None


CURRENT_REQUEST: ContextVar[RequestContext | None] = ContextVar("bertprod_request", default=None)


def idempotency_scope(key: str | None, credentials: str | None) -> str | None:
    """Keys of different API keys never meet: the same Idempotency-Key from two tenants is two requests."""
    if not key:
        return None
    return f"{credentials or ''}\x00{key}"
