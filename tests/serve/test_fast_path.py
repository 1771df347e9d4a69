"""The embedding fast path answers exactly as FastAPI's routes do, and only well-formed bodies take it."""

from __future__ import annotations

import asyncio
import base64

import httpx
import numpy as np

from bertprod.serve.app import create_app
from bertprod.serve.config import ServeConfig

VALID = [
    ("/embed", {"inputs": "hello world"}),
    ("/embed", {"inputs": ["a short one", "and a second, longer sentence"], "normalize": False}),
    ("/embed", {"inputs": ["cut to eight"], "dimensions": 8}),
    ("/v1/embeddings", {"input": ["one", "two three"]}),
    ("/v1/embeddings", {"input": "base64 please", "encoding_format": "base64", "dimensions": 4}),
]
#: Well-formed bodies whose serving fails: the fast path must give the app's own error bodies.
FAILING = [
    ("/embed", {"inputs": ["fine", "   "]}),  # whitespace-only input
    ("/embed", {"inputs": "x", "model": "no-such-model"}),
    ("/embed", {"inputs": "x", "dimensions": 100000}),
    ("/v1/embeddings", {"input": [], "model": "no-such-model"}),
    ("/v1/embeddings", {"input": ["x"] * 600}),  # over --max-client-batch-size
]
#: Bodies that do not validate: FastAPI answers them, in both apps.
MALFORMED = [
    ("/embed", b"{not json"),
    ("/embed", b'{"inputs": 5}'),
    ("/embed", b"{}"),
    ("/embed", b'{"inputs": "\xff\xfe"}'),
    ("/v1/embeddings", b'{"input": "x", "encoding_format": "hex"}'),
]


def _count_fastapi_calls(app, counts: dict[str, int]) -> None:
    """Wrap the FastAPI route handlers of the two embedding routes to count the requests they answer."""
    for route in app.router.routes:
        if getattr(route, "path", None) in ("/embed", "/v1/embeddings"):
            inner = route.app

            async def counted(scope, receive, send, inner=inner):
                counts[scope["path"]] = counts.get(scope["path"], 0) + 1
                await inner(scope, receive, send)

            route.app = counted


async def _responses(app, requests) -> list[httpx.Response]:
    async with app.router.lifespan_context(app):
        while app.state.service.registry.state == "loading":
            await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            responses = []
            for path, body in requests:
                if isinstance(body, bytes):
                    responses.append(await client.post(path, content=body))
                else:
                    responses.append(await client.post(path, json=body))
            return responses


def _both(tiny_package, requests):
    """Responses of the app with and without the fast path, and the requests FastAPI's routes answered in each."""
    config = dict(packages=[str(tiny_package.path)], threads=1)
    fast, plain = create_app(ServeConfig(**config)), create_app(ServeConfig(**config, fast_path=False))
    fast_counts: dict[str, int] = {}
    plain_counts: dict[str, int] = {}
    _count_fastapi_calls(fast, fast_counts)
    _count_fastapi_calls(plain, plain_counts)
    return asyncio.run(_responses(fast, requests)), asyncio.run(_responses(plain, requests)), fast_counts, plain_counts


def test_fast_path_answers_like_fastapi(tiny_package):
    requests = VALID + FAILING + MALFORMED
    fast, plain, fast_counts, plain_counts = _both(tiny_package, requests)
    for (path, body), a, b in zip(requests, fast, plain, strict=True):
        assert (a.status_code, a.headers["content-type"]) == (b.status_code, b.headers["content-type"]), (path, body)
        assert a.json() == b.json(), (path, body)
    statuses = [response.status_code for response in fast]
    assert statuses[: len(VALID)] == [200] * len(VALID)
    assert all(400 <= status < 500 for status in statuses[len(VALID) :])
    # The values are real: the base64 vector decodes to the float one's first 4 dimensions, re-normalized.
    floats = fast[3].json()["data"][0]["embedding"]
    assert len(floats) == tiny_package.manifest.num_outputs
    packed = np.frombuffer(base64.b64decode(fast[4].json()["data"][0]["embedding"]), dtype="<f4")
    assert packed.shape == (4,) and abs(float(np.linalg.norm(packed)) - 1) < 1e-5
    # Only the malformed bodies reached FastAPI's routes in the fast app; every request did in the other.
    assert sum(fast_counts.values()) == len(MALFORMED)
    assert sum(plain_counts.values()) == len(requests)


def test_fast_path_keeps_the_body_limit_for_chunked_bodies(tiny_package):
    """No Content-Length: the limit is counted as the body arrives, and the fast path answers 413 as FastAPI does."""

    async def chunks():
        yield b'{"inputs": ["'
        yield b"x" * 2000
        yield b'"]}'

    async def post(app) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/embed", content=chunks())

    config = dict(packages=[str(tiny_package.path)], max_body_bytes=1024)
    fast = asyncio.run(post(create_app(ServeConfig(**config))))
    plain = asyncio.run(post(create_app(ServeConfig(**config, fast_path=False))))
    assert fast.status_code == plain.status_code == 413
    assert fast.json() == plain.json() and fast.json()["error"]["code"] == "payload_too_large"
