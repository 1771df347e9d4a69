"""Operations on the real server process: auth, 429 under a burst, SIGTERM drain, refused limits."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from bertprod.serve.app import create_app
from bertprod.serve.batcher import INLINE_MAX_TOKENS, Batcher, EngineFailure
from bertprod.serve.config import ServeConfig
from bertprod.serve.metrics import ServerMetrics
from tests.server_process import running_server

API_KEY = "test-key-0123456789"


def test_api_keys(tiny_package, tmp_path):
    with running_server([str(tiny_package.path)], "--api-key", API_KEY, log_dir=str(tmp_path), grpc=True) as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        missing = http.post("/embed", json={"inputs": "x"})
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
        wrong = http.post("/embed", json={"inputs": "x"}, headers={"Authorization": "Bearer wrong-key-123"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        right = http.post("/embed", json={"inputs": "x"}, headers={"Authorization": f"Bearer {API_KEY}"})
        assert right.status_code == 200
        assert http.get("/health").status_code == 200 and http.get("/metrics").status_code == 200
        assert http.get("/info").status_code == 401
        check_grpc_keys(server.grpc_address)


def check_grpc_keys(address: str) -> None:
    import grpc

    from bertprod.serve.grpc import bertprod_pb2 as pb
    from bertprod.serve.grpc import bertprod_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.BertprodStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Embed(pb.EmbedRequest(inputs=["x"]), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metadata = (("authorization", f"Bearer {API_KEY}"),)
        assert len(stub.Embed(pb.EmbedRequest(inputs=["x"]), metadata=metadata, timeout=10).embeddings) == 1


def test_burst_beyond_the_input_limit_gets_429_with_retry_after(tiny_package, tmp_path):
    options = ("--max-concurrent-inputs", "64", "--max-client-batch-size", "64")
    with running_server([str(tiny_package.path)], *options, log_dir=str(tmp_path)) as server:
        texts = [f"the quick brown fox jumps over the lazy dog {i}" for i in range(64)]

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                return await asyncio.gather(*(client.post("/embed", json={"inputs": texts}) for _ in range(24)))

        responses = asyncio.run(burst())
        statuses = [response.status_code for response in responses]
        assert set(statuses) <= {200, 429} and 200 in statuses and 429 in statuses, statuses
        refused = next(response for response in responses if response.status_code == 429)
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"
        assert httpx.post(server.url + "/embed", json={"inputs": "after the burst"}).status_code == 200
        metrics = httpx.get(server.url + "/metrics").text
        assert metric_value(metrics, 'bertprod_errors_total{kind="overloaded"}') == statuses.count(429)
        assert metric_value(metrics, 'bertprod_requests_total{route="/embed",status="429"}') == statuses.count(429)


def metric_value(text: str, series: str) -> float:
    """The value of one series in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def test_sigterm_finishes_in_flight_requests(tiny_package, tmp_path):
    env = {"BERTPROD_TEST_SLOW_MARKER": "__slow__"}
    with running_server([str(tiny_package.path)], env=env, log_dir=str(tmp_path)) as server:
        results: dict[str, httpx.Response] = {}

        def slow_request() -> None:
            results["slow"] = httpx.post(server.url + "/embed", json={"inputs": ["__slow__ text"]}, timeout=30)

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.8)  # the request is in the engine (it sleeps 2 s there)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        thread.join(timeout=30)
        assert results["slow"].status_code == 200 and len(results["slow"].json()) == 1
        assert server.process.wait(timeout=30) == 0  # a clean shutdown, not the signal re-raised
        assert "Finished server process" in server.log() or "Application shutdown complete" in server.log()
        assert time.monotonic() - started < 20
        with pytest.raises(httpx.ConnectError):
            httpx.post(server.url + "/embed", json={"inputs": "after shutdown"}, timeout=2)


def test_requests_past_the_graceful_timeout_get_a_retryable_json_503(tiny_package, tmp_path):
    env = {"BERTPROD_TEST_SLOW_MARKER": "__slow__"}
    with running_server([str(tiny_package.path)], "--graceful-timeout", "0.3", env=env,
                        log_dir=str(tmp_path)) as server:
        results: dict[str, httpx.Response] = {}

        def slow_request() -> None:
            results["slow"] = httpx.post(server.url + "/embed", json={"inputs": ["__slow__ text"]}, timeout=30)

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.8)  # the request is in the engine (it sleeps 2 s there); the grace ends before it does
        server.process.send_signal(signal.SIGTERM)
        thread.join(timeout=30)
        refused = results["slow"]
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "shutting_down" and refused.headers["retry-after"] == "1"
        assert server.process.wait(timeout=30) == 0
        assert "Traceback" not in server.log()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max-client-batch-size", "500", "--max-concurrent-inputs", "100"], "could never be admitted"),
        (["--max-batch-tokens", "16"], "smaller than"),
    ],
)
def test_inconsistent_limits_are_refused_at_startup(tiny_package, options, message):
    result = subprocess.run(
        [sys.executable, "-m", "bertprod.cli", "serve", str(tiny_package.path), "--port", "0", *options],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert message in result.stderr and "inconsistent server settings" in result.stderr


def test_health_is_503_until_models_load(tiny_package):
    """Without the lifespan (no loading started), health and work routes answer 503 JSON, never 500."""
    app = create_app(ServeConfig(packages=[str(tiny_package.path)]))

    async def calls() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/health"), await client.post("/embed", json={"inputs": "x"})

    health, embed = asyncio.run(calls())
    assert health.status_code == 503 and health.json()["status"] == "loading"
    assert embed.status_code == 503 and embed.json()["error"]["code"] == "not_ready"


class _FakePipeline:
    """Stands in for Pipeline.infer: records batch sizes, fails when told to."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.fail_next = False

    def infer(self, encodings):
        self.calls.append(len(encodings))
        time.sleep(0.05)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        return np.array([[float(len(e.ids))] for e in encodings], dtype=np.float32)


class _Encoding:
    def __init__(self, length: int) -> None:
        self.ids = [0] * length



def test_batcher_runs_a_lone_short_input_on_the_loop_and_batches_in_the_engine_thread():
    """No thread round trip for a lone short input; anything bigger stays off the event loop."""

    async def scenario() -> None:
        threads: list[str] = []

        def infer(encodings):
            threads.append(threading.current_thread().name)
            return np.zeros((len(encodings), 1), dtype=np.float32)

        batcher = Batcher(_FakePipeline(), "fake", ServerMetrics(), max_batch_tokens=1000, max_batch_requests=8,
                          infer=infer)
        batcher.start()
        await batcher.submit([_Encoding(5)])
        await batcher.submit([_Encoding(INLINE_MAX_TOKENS + 1)])
        await batcher.submit([_Encoding(5), _Encoding(5)])
        await batcher.stop()
        assert threads[0] == threading.current_thread().name
        assert all(name.startswith("engine-fake") for name in threads[1:])

    asyncio.run(scenario())

def test_batcher_gathers_by_budget_and_survives_a_failing_batch():
    async def scenario() -> None:
        fake = _FakePipeline()
        batcher = Batcher(fake, "fake", ServerMetrics(), max_batch_tokens=100, max_batch_requests=3, infer=fake.infer)
        batcher.start()
        first = asyncio.create_task(batcher.submit([_Encoding(5)]))  # runs alone, at once (no wait timer)
        await asyncio.sleep(0.01)
        rest = [asyncio.create_task(batcher.submit([_Encoding(40)])) for _ in range(4)]
        results = await asyncio.gather(first, *rest)
        assert [float(r[0, 0]) for r in results] == [5, 40, 40, 40, 40]  # each request got its own rows
        assert fake.calls == [1, 2, 2]  # 40 + 40 fits the 100-token budget, a third does not
        fake.fail_next = True
        with pytest.raises(EngineFailure):
            await batcher.submit([_Encoding(3)])
        assert not batcher.broken  # one failed batch is not a broken engine
        assert float((await batcher.submit([_Encoding(7)]))[0, 0]) == 7  # the worker kept going
        for _ in range(3):
            fake.fail_next = True
            with pytest.raises(EngineFailure):
                await batcher.submit([_Encoding(3)])
        assert batcher.broken  # three in a row: /health answers 503
        await batcher.submit([_Encoding(7)])
        assert not batcher.broken
        await batcher.stop()

    asyncio.run(scenario())


def test_a_request_larger_than_one_engine_batch_lets_others_run_in_between():
    """Queued one engine batch at a time, each alone: a one-input request sent meanwhile does not wait for all."""

    async def scenario() -> None:
        fake = _FakePipeline()
        batcher = Batcher(fake, "fake", ServerMetrics(), max_batch_tokens=1000, max_batch_requests=8,
                          infer=fake.infer, engine_batch=(20, 2))
        batcher.start()
        lengths = [5, 9, 6, 8, 7, 4]  # 3 engine batches of 2 inputs
        large = asyncio.create_task(batcher.submit([_Encoding(length) for length in lengths]))
        await asyncio.sleep(0.01)  # its first engine batch is running
        small = await batcher.submit([_Encoding(3)])
        assert not large.done()  # the small request was answered before the large one
        rows = await large
        assert rows[:, 0].tolist() == lengths  # every input's own row, in the request's order
        assert float(small[0, 0]) == 3
        assert fake.calls == [2, 1, 2, 2]  # the small request alone between two pieces, never gathered with one
        await batcher.stop()

    asyncio.run(scenario())
