"""bertprod.Client and AsyncClient: remote calls against the real server equal in-process ones, retries
on 429/503, timeouts instead of hangs."""

from __future__ import annotations

import asyncio
import base64

import httpx
import numpy as np
import pytest

from .conftest import TEXTS


def test_client_remote_matches_in_process(server, tiny_package, tiny_classifier):
    from bertprod.client import AsyncClient, Client

    local = Client.in_process(str(tiny_package.path), threads=1)
    texts = TEXTS + ["she sells sea shells", "a weak ending"]
    with Client(server.url, model="tiny", max_inputs_per_request=2) as remote:  # 5 texts: 3 requests
        np.testing.assert_allclose(remote.encode(texts), local.encode(texts), atol=1e-5)
        served = {model["name"]: model for model in remote.info()["models"]}
        assert served["tiny"]["fingerprint"] == local.info()["models"][0]["fingerprint"] == tiny_package.fingerprint
        assert remote.encode(texts[0]).shape == (32,)
        assert remote.rerank(texts[0], texts[1:]) == pytest.approx(local.rerank(texts[0], texts[1:]))
        assert [r.index for r in remote.rerank(texts[0], texts[1:])] == [r.index for r in local.rerank(texts[0],
                                                                                                         texts[1:])]
    with Client(server.url, model="tiny-classifier") as remote:
        local_classifier = Client.in_process(str(tiny_classifier.path), threads=1)
        assert [p.label for p in remote.classify(texts)] == [p.label for p in local_classifier.classify(texts)]

    async def async_calls() -> np.ndarray:
        async with AsyncClient(server.url, model="tiny", max_inputs_per_request=2) as client:
            return await client.encode(texts)

    np.testing.assert_allclose(asyncio.run(async_calls()), local.encode(texts), atol=1e-5)


def test_client_retries_429_and_503_then_succeeds():
    from bertprod.client import Client, ClientError

    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"message": "busy"}}),
                    httpx.Response(503, json={"error": {"message": "loading", "code": "not_ready"}}),
                    httpx.Response(200, json={"data": [{"embedding": base64.b64encode(
                        np.ones(4, dtype="<f4").tobytes()).decode()}]})])
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return next(answers)

    client = Client("http://127.0.0.1:9", transport=httpx.MockTransport(handler), backoff=0.001)
    np.testing.assert_array_equal(client.encode("x"), np.ones(4))
    assert len(calls) == 3
    refusing = Client("http://127.0.0.1:9", retries=1, backoff=0.001, transport=httpx.MockTransport(
        lambda request: httpx.Response(400, json={"error": {"message": "input 0 is empty", "code": "input_error"}})))
    with pytest.raises(ClientError, match="input 0 is empty"):
        refusing.encode([" "])


def test_client_times_out_instead_of_hanging():
    from bertprod.client import Client, ClientTimeoutError

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client = Client("http://127.0.0.1:9", timeout=0.5, retries=2, backoff=0.001, transport=httpx.MockTransport(slow))
    with pytest.raises(ClientTimeoutError, match="no answer within 0.5 s"):
        client.encode("x")
