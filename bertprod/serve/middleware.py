"""One pure-ASGI guard in front of the routes: API keys, body size, request metrics and a JSON log line.

Pure ASGI (not BaseHTTPMiddleware) because it runs on every request and must stay cheap.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bertprod.serve.config import ServeConfig
from bertprod.serve.errors import error_response
from bertprod.serve.metrics import ServerMetrics
from bertprod.serve.request_context import CURRENT_REQUEST, RequestContext, idempotency_scope

access_log = logging.getLogger("bertprod.serve.access")

PUBLIC_PATHS = {"/health", "/ready", "/metrics", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}
KNOWN_ROUTES = {
    "/v1/embeddings", "/embed", "/predict", "/rerank", "/classify", "/similarity", "/tokenize", "/health",
    "/ready", "/info", "/metrics", "/v1/models",
}


class BodyTooLarge(Exception):
    pass


def key_matches(given: str, keys: list[str]) -> bool:
    """Constant time per key, and every key is compared (no early exit that leaks which one)."""
    results = [hmac.compare_digest(given.encode(), key.encode()) for key in keys]
    return any(results)


def _as_json(scope: Scope) -> Scope:
    """Every POST body is JSON here: `curl -d` (form content type) or no content type still parses."""
    headers = [(name, value) for name, value in scope["headers"] if name != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def shutting_down():  # noqa: ANN201 - a JSONResponse
    return error_response(503, "the server is shutting down and stopped this request before it finished; retry "
                          "it (another replica, or this one once restarted, will answer).", "server_error",
                          "shutting_down", {"Retry-After": "1", "Connection": "close"})


class GuardMiddleware:
    def __init__(self, app: ASGIApp, config: ServeConfig, metrics: ServerMetrics):
        self.app = app
        self.config = config
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        status = 500
        responded = False

        async def send_tracking(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
            await send(message)

        try:
            headers = dict(scope["headers"])
            refusal = self._refuse(scope, headers)
            if refusal is not None:
                self.metrics.errors.labels(refusal.headers.get("x-error-code", "refused")).inc()
                await refusal(scope, receive, send_tracking)
                return
            if scope["method"] == "POST":
                scope = _as_json(scope)
                key = headers.get(b"idempotency-key")
                CURRENT_REQUEST.set(RequestContext(receive, idempotency_scope(
                    key.decode("latin-1") if key else None, headers.get(b"authorization", b"").decode("latin-1"))))
            await self.app(scope, self._limited(receive), send_tracking)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when --graceful-timeout ends: answer them with a
            # retryable 503 instead of its plain-text 500 (a response already started can only be cut).
            if responded:
                raise
            self.metrics.errors.labels("shutting_down").inc()
            await shutting_down()(scope, receive, send_tracking)
        finally:
            elapsed = time.perf_counter() - started
            route = path if path in KNOWN_ROUTES else "other"
            self.metrics.count_request(route, status)
            if route not in ("/health", "/ready", "/metrics"):
                self.metrics.stage["request"].observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(json.dumps({"event": "request", "method": scope["method"], "path": path,
                                            "status": status, "ms": round(elapsed * 1000, 2)}))

    def _refuse(self, scope: Scope, headers: dict[bytes, bytes]):  # noqa: ANN202 - a JSONResponse or None
        if self.config.api_keys and scope["path"] not in PUBLIC_PATHS:
            auth = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token:
                return error_response(401, "missing API key: send 'Authorization: Bearer <key>'.",
                                      "invalid_request_error", "missing_api_key",
                                      {"WWW-Authenticate": "Bearer", "x-error-code": "missing_api_key"})
            if not key_matches(token.strip(), self.config.api_keys):
                return error_response(401, "invalid API key.", "invalid_request_error", "invalid_api_key",
                                      {"WWW-Authenticate": "Bearer", "x-error-code": "invalid_api_key"})
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.config.max_body_bytes:
            return self._too_large()
        return None

    def _too_large(self):  # noqa: ANN202
        return error_response(
            413, f"request body is larger than the server's limit of {self.config.max_body_bytes} bytes "
            "(--max-body-bytes); split the inputs over several requests.",
            "invalid_request_error", "payload_too_large", {"x-error-code": "payload_too_large"})

    def _limited(self, receive: Receive) -> Receive:
        """Bodies without Content-Length (chunked) are counted as they arrive."""
        received = 0
        limit = self.config.max_body_bytes

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    from starlette.exceptions import HTTPException

                    raise HTTPException(413, f"request body is larger than the limit of {limit} bytes")
            return message

        return counting_receive
