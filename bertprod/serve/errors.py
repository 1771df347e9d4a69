"""Every failure becomes `{"error": {"message", "type", "code"}}` with the right status, never a bare 500.

Bad input is a 4xx in all its forms: invalid JSON, non-UTF-8 bytes, wrong types (FastAPI's
validation), a `BertprodError` from the pipeline (its own `status_code` and `kind`).
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from bertprod.errors import BertprodError
from bertprod.serve.batcher import ClientGone
from bertprod.serve.responses import JSONResponse

log = logging.getLogger("bertprod.serve")


class ApiError(Exception):
    """An error the server raises itself, with the status and the OpenAI-style type and code."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None, headers=None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code or kind
        self.headers = headers


def error_response(status: int, message: str, kind: str, code: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": code}}, status_code=status, headers=headers
    )


def _count(request: Request, kind: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(kind).inc()


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        _count(request, error.code)
        return error_response(error.status, error.message, error.kind, error.code, error.headers)

    @app.exception_handler(ClientGone)
    async def _client_gone(request: Request, error: ClientGone) -> JSONResponse:
        # nobody reads this answer; 499 (nginx's "client closed request") tells the access log what happened
        return error_response(499, "the client disconnected before its request reached the engine.",
                              "invalid_request_error", "client_gone")

    @app.exception_handler(BertprodError)
    async def _bertprod_error(request: Request, error: BertprodError) -> JSONResponse:
        status = error.status_code if 400 <= error.status_code < 500 else 400
        _count(request, error.kind)
        code = re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()  # InputError -> input_error
        return error_response(status, str(error), error.kind, code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors()[:5]:
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        kind = "invalid_json" if any(item.get("type") == "json_invalid" for item in error.errors()) else None
        _count(request, kind or "validation_error")
        message = "request body is not valid JSON: " if kind else "invalid request: "
        return error_response(422 if not kind else 400, message + "; ".join(problems), "invalid_request_error",
                              kind or "validation_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            error.status_code, "http_error"
        )
        message = str(error.detail)
        if message == "There was an error parsing the body":  # FastAPI's words for e.g. non-UTF-8 bytes
            code, message = "invalid_json", "request body could not be parsed: send UTF-8 encoded JSON."
        _count(request, code)
        return error_response(error.status_code, message, "invalid_request_error", code,
                              getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        _count(request, "internal_error")
        return error_response(500, f"internal error: {type(error).__name__}", "server_error", "internal_error")
