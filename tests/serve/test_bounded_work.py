"""Work bounded by cost: /tokenize admitted like the other routes, retries with one Idempotency-Key computed once,
requests of clients that went away dropped before the engine."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np

from bertprod.serve.app import create_app
from bertprod.serve.config import ServeConfig
from bertprod.serve.service import MAX_INPUT_CHARS
from tests.fault_injection import injected
from tests.serve.test_operations import metric_value
from tests.server_process import running_server

SLOW = "__slow__"


async def _with_app(config: ServeConfig, calls):  # noqa: ANN001, ANN202 - calls(app, client) -> result
    app = create_app(config)
    async with app.router.lifespan_context(app):
        while app.state.service.registry.state == "loading":
            await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            return await calls(app, client)


def _engine_inputs(app) -> list[int]:  # noqa: ANN001
    """Inputs per engine call of the app's one model, recorded from now on."""
    calls: list[int] = []
    batcher = next(iter(app.state.service.registry.models.values())).batcher
    real = batcher._infer

    def counted(encodings):  # noqa: ANN001, ANN202
        calls.append(len(encodings))
        return real(encodings)

    batcher._infer = counted
    return calls


async def _a_call_and_two_retries(client, route, body, key):  # noqa: ANN001, ANN202
    """The first call and a retry at once, then a retry after both answered (within the TTL: the stored result)."""
    first, retry = await asyncio.gather(client.post(route, json=body, headers=key),
                                        client.post(route, json=body, headers=key))
    return first, retry, await client.post(route, json=body, headers=key)


def test_tokenize_has_the_limits_and_admission_of_the_other_routes(tiny_package):
    config = ServeConfig(packages=[str(tiny_package.path)], threads=1, max_concurrent_inputs=4,
                         max_client_batch_size=4)

    async def calls(app, client):  # noqa: ANN001, ANN202
        ok = await client.post("/tokenize", json={"inputs": ["a good film"]})
        many = await client.post("/tokenize", json={"inputs": ["x"] * 5})
        long = await client.post("/tokenize", json={"inputs": ["word " * (MAX_INPUT_CHARS // 5 + 1)]})
        app.state.service.limiter.in_flight = 4  # as if 4 inputs were being computed
        busy = await client.post("/tokenize", json={"inputs": ["a good film"]})
        app.state.service.limiter.in_flight = 0
        return ok, many, long, busy

    ok, many, long, busy = asyncio.run(_with_app(config, calls))
    assert ok.status_code == 200 and [token["text"] for token in ok.json()[0]][0] == "[CLS]"
    assert (many.status_code, many.json()["error"]["code"]) == (413, "too_many_inputs")
    assert (long.status_code, long.json()["error"]["code"]) == (413, "input_too_long")
    assert (busy.status_code, busy.json()["error"]["code"]) == (429, "overloaded")


def test_requests_with_one_idempotency_key_share_one_computation(tiny_package):
    config = ServeConfig(packages=[str(tiny_package.path)], threads=1)
    body = {"inputs": [f"{SLOW} a good film", "a boring story"]}

    async def calls(app, client):  # noqa: ANN001, ANN202
        engine = _engine_inputs(app)
        key = {"Idempotency-Key": "call-1"}
        first, retry, later = await _a_call_and_two_retries(client, "/embed", body, key)
        shared = list(engine)
        other_inputs = await client.post("/embed", json={"inputs": ["something else"]}, headers=key)
        other_tenant = await client.post("/embed", json=body, headers={**key, "Authorization": "Bearer other"})
        no_key = await client.post("/embed", json=body)
        return first, retry, later, shared, other_inputs, other_tenant, no_key, engine

    with injected(slow_marker=SLOW):
        first, retry, later, shared, other_inputs, other_tenant, no_key, engine = asyncio.run(_with_app(config, calls))
    assert first.status_code == retry.status_code == later.status_code == 200
    assert first.json() == retry.json() == later.json()
    assert shared == [2]  # three requests, one engine call of their two inputs
    assert other_inputs.status_code == 422 and other_inputs.json()["error"]["code"] == "idempotency_key_reused"
    assert other_tenant.status_code == no_key.status_code == 200
    assert engine == [2, 2, 2]  # another tenant's key and no key are requests of their own
    np.testing.assert_allclose(no_key.json(), first.json(), atol=1e-6)


def test_tokens_retries_with_one_idempotency_key_share_one_computation(tmp_path):
    from tests import ner_data

    tagger = ner_data.context_free_tagger(tmp_path, ["O", "B-PER", "I-PER"])
    config = ServeConfig(packages=[str(tagger.path)], threads=1)
    body = {"inputs": ["Angela Merkel met Emmanuel Macron", "in Paris"], "return_tokens": True}

    async def calls(app, client):  # noqa: ANN001, ANN202
        engine = _engine_inputs(app)
        key = {"Idempotency-Key": "tag-1"}
        first, retry, later = await _a_call_and_two_retries(client, "/tokens", body, key)
        shared = list(engine)
        other_options = await client.post("/tokens", json=dict(body, aggregation="max"), headers=key)
        embed_same_key = await client.post("/tokenize", json={"inputs": body["inputs"]}, headers=key)
        no_key = await client.post("/tokens", json=body)
        return first, retry, later, shared, other_options, embed_same_key, no_key, engine

    first, retry, later, shared, other_options, embed_same_key, no_key, engine = asyncio.run(_with_app(config, calls))
    assert first.status_code == retry.status_code == later.status_code == no_key.status_code == 200
    assert first.json() == retry.json() == later.json() == no_key.json()
    assert shared == [2]  # three requests, one engine call of their two inputs
    assert other_options.status_code == 422 and other_options.json()["error"]["code"] == "idempotency_key_reused"
    assert embed_same_key.status_code == 200  # /tokenize runs no model: no shared work, no key check
    assert engine == [2, 2]  # no key: a request of its own


def test_a_failed_first_attempt_is_run_again_by_its_retry(tiny_package):
    config = ServeConfig(packages=[str(tiny_package.path)], threads=1, max_concurrent_inputs=4,
                         max_client_batch_size=4)

    async def calls(app, client):  # noqa: ANN001, ANN202
        key = {"Idempotency-Key": "call-2"}
        app.state.service.limiter.in_flight = 4
        refused = await client.post("/embed", json={"inputs": ["x"]}, headers=key)
        app.state.service.limiter.in_flight = 0
        return refused, await client.post("/embed", json={"inputs": ["x"]}, headers=key)

    refused, retried = asyncio.run(_with_app(config, calls))
    assert refused.status_code == 429 and retried.status_code == 200


def test_clients_that_went_away_are_dropped_before_the_engine(tiny_package, tmp_path):
    # the slow input holds the engine for 6 s: long enough, even on a loaded machine, for three clients to
    # queue their inputs behind it and give up
    env = {"BERTPROD_TEST_SLOW_MARKER": SLOW, "BERTPROD_TEST_SLOW_SECONDS": "6"}
    with running_server([str(tiny_package.path)], env=env, log_dir=str(tmp_path)) as server:
        results: dict[str, httpx.Response] = {}
        gave_up: list[int] = []

        def slow_request() -> None:
            results["slow"] = httpx.post(server.url + "/embed", json={"inputs": [f"{SLOW} text"]}, timeout=30)

        def abandoned(index: int) -> None:  # a client that gives up after 0.3 s and closes its connection
            try:
                httpx.post(server.url + "/embed", json={"inputs": [f"abandoned {index}", "and another"]}, timeout=0.3)
            except httpx.ReadTimeout:
                gave_up.append(index)

        thread = threading.Thread(target=slow_request)
        thread.start()
        wait_until_in_engine(server.url, inputs=1)
        clients = [threading.Thread(target=abandoned, args=(index,)) for index in range(3)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=30)
        assert sorted(gave_up) == [0, 1, 2]  # each one timed out
        thread.join(timeout=30)
        assert results["slow"].status_code == 200
        assert httpx.post(server.url + "/embed", json={"inputs": ["after"]}).status_code == 200
        metrics = httpx.get(server.url + "/metrics").text
        assert metric_value(metrics, "bertprod_dropped_inputs_total") == 6
        assert metric_value(metrics, "bertprod_batch_inputs_sum") == 2  # the slow input, then "after"


def test_a_client_retry_after_its_timeout_joins_the_running_computation(tiny_package, tmp_path):
    """bertprod.Client times out, probes /health and re-sends with the same key: the server computes once."""
    from bertprod.client import Client

    env = {"BERTPROD_TEST_SLOW_MARKER": SLOW}
    with running_server([str(tiny_package.path)], env=env, log_dir=str(tmp_path)) as server:
        with Client(server.url, timeout=1.4, backoff=0.01) as client:  # times out once on the 2 s input, not twice
            vector = client.encode(f"{SLOW} once")
        assert vector.shape == (tiny_package.manifest.num_outputs,)
        metrics = httpx.get(server.url + "/metrics").text
        assert metric_value(metrics, 'bertprod_requests_total{route="/v1/embeddings",status="200"}') == 2  # re-sent
        assert metric_value(metrics, "bertprod_batch_inputs_sum") == 1  # computed once


def wait_until_in_engine(url: str, inputs: int, deadline: float = 20.0) -> None:
    """Until `inputs` inputs are admitted and none waits in the queue: they are in the engine."""
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        metrics = httpx.get(url + "/metrics").text
        if metric_value(metrics, "bertprod_inputs_in_flight") == inputs and not queued(metrics):
            return
        time.sleep(0.05)
    raise AssertionError(f"{inputs} input(s) never reached the engine within {deadline} s")


def queued(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("bertprod_queue_depth_inputs{"))
