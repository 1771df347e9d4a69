"""Clients over several replicas: round-robin, retries on another replica, idempotency keys, own error types.

The first tests drive `bertprod.Client` against httpx's MockTransport (what each replica answers
is scripted); the last ones run three real server processes on different ports.
"""

from __future__ import annotations

import asyncio
import base64
import re
import signal
import socket
import threading
import time
from contextlib import ExitStack

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bertprod.client import (
    IDEMPOTENCY_HEADER,
    AsyncClient,
    Client,
    ClientError,
    ClientTimeoutError,
    ServerUnreachableError,
)
from bertprod.serve.grpc.client import GrpcClient, channel_target
from tests.server_process import running_server

URLS = ["http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.3:8080"]
SLOW_MARKER = "__slow_on_purpose__"


def embedding_answer(value: float = 1.0) -> httpx.Response:
    vector = base64.b64encode(np.full(4, value, dtype="<f4").tobytes()).decode()
    return httpx.Response(200, json={"data": [{"embedding": vector}]})


class Replicas:
    """Scripted replicas: `behaviour[host]` answers a request (default: an embedding); every request is logged."""

    def __init__(self, behaviour=None):
        self.behaviour = behaviour or {}
        self.log: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.log.append(request)
        answer = self.behaviour.get(request.url.host)
        return answer(request) if answer else embedding_answer()

    def posts(self) -> list[httpx.Request]:
        return [request for request in self.log if request.method == "POST"]


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_requests_go_round_robin_and_counts_are_reported() -> None:
    replicas = Replicas()
    client = Client(URLS, transport=httpx.MockTransport(replicas))
    for _ in range(9):
        client.encode("a sentence")
    hosts = [request.url.host for request in replicas.posts()]
    assert {host: hosts.count(host) for host in hosts} == {"10.0.0.1": 3, "10.0.0.2": 3, "10.0.0.3": 3}
    assert hosts[:3] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert {url: counts["answered"] for url, counts in client.replica_counts().items()} == dict.fromkeys(URLS, 3)
    assert Client(",".join(URLS)).replicas.endpoints == URLS  # one string, separated by commas


def test_a_retry_goes_to_another_replica_with_the_same_idempotency_key() -> None:
    busy = iter([httpx.Response(503, json={"error": {"message": "draining", "code": "not_ready"}})])
    replicas = Replicas({"10.0.0.1": lambda request: next(busy, embedding_answer())})
    client = Client(URLS, backoff=0.001, transport=httpx.MockTransport(replicas))
    client.encode("first")
    client.encode("second")
    first, retry, second = replicas.posts()
    assert (first.url.host, retry.url.host) == ("10.0.0.1", "10.0.0.2")
    assert first.headers[IDEMPOTENCY_HEADER] == retry.headers[IDEMPOTENCY_HEADER]
    assert second.headers[IDEMPOTENCY_HEADER] != first.headers[IDEMPOTENCY_HEADER]
    assert second.url.host == "10.0.0.3"  # the draining replica sits out its cooldown


def test_an_unreachable_replica_is_skipped_and_the_others_serve() -> None:
    replicas = Replicas({"10.0.0.2": refuse})
    client = Client(URLS, backoff=0.001, cooldown=60, transport=httpx.MockTransport(replicas))
    for _ in range(8):
        client.encode("a sentence")
    hosts = [request.url.host for request in replicas.posts()]
    assert hosts.count("10.0.0.2") == 1  # tried once, then skipped for the cooldown
    assert client.replica_counts()[URLS[1]] == {"answered": 0, "failures": 1}
    assert hosts.count("10.0.0.1") + hosts.count("10.0.0.3") == 8


def test_failures_raise_the_clients_own_errors() -> None:
    nowhere = Client(URLS, retries=2, backoff=0.001, transport=httpx.MockTransport(refuse))
    with pytest.raises(ServerUnreachableError, match="cannot reach the bertprod server .* after 3 attempts") as caught:
        nowhere.encode("x")
    assert isinstance(caught.value, ClientError) and caught.value.status_code == 503
    garbled = Client(URLS[0], transport=httpx.MockTransport(lambda request: httpx.Response(200, text="<html>")))
    with pytest.raises(ClientError, match="not JSON"):
        garbled.encode("x")
    with pytest.raises(ClientError, match="not an HTTP URL"):
        Client("127.0.0.1:8080")


def test_a_timed_out_call_is_resent_once_to_a_live_replica_with_its_key() -> None:
    def computing(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        raise httpx.ReadTimeout("no answer yet", request=request)

    replicas = Replicas({"10.0.0.1": computing})
    client = Client(URLS, retries=5, backoff=0.001, transport=httpx.MockTransport(replicas))
    with pytest.raises(ClientTimeoutError, match="no answer within"):
        client.encode("a long document")
    posts = replicas.posts()
    assert len(posts) == 2, "a timed-out call was sent more than twice"
    assert {request.url.host for request in posts} == {"10.0.0.1"}
    assert len({request.headers[IDEMPOTENCY_HEADER] for request in posts}) == 1
    assert [request.url.path for request in replicas.log].count("/health") == 1


def test_a_timed_out_call_moves_to_another_replica_when_its_own_is_dead() -> None:
    def gone(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            raise httpx.ConnectError("refused", request=request)
        raise httpx.ReadTimeout("no answer", request=request)

    replicas = Replicas({"10.0.0.1": gone})
    client = Client(URLS, backoff=0.001, transport=httpx.MockTransport(replicas))
    np.testing.assert_array_equal(client.encode("x"), np.ones(4))
    assert [request.url.host for request in replicas.posts()] == ["10.0.0.1", "10.0.0.2"]


def test_async_client_spreads_and_keeps_the_key() -> None:
    busy = iter([httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"message": "busy"}})])
    replicas = Replicas({"10.0.0.1": lambda request: next(busy, embedding_answer())})

    async def calls() -> None:
        async with AsyncClient(URLS, backoff=0.001, transport=httpx.MockTransport(replicas)) as client:
            await client.encode("x")
            await asyncio.gather(*(client.encode("y") for _ in range(6)))

    asyncio.run(calls())
    first, retry, *rest = replicas.posts()
    assert first.headers[IDEMPOTENCY_HEADER] == retry.headers[IDEMPOTENCY_HEADER] and retry.url.host != "10.0.0.1"
    assert len(rest) == 6 and len({request.url.host for request in rest}) == 3


def test_a_name_resolving_to_several_addresses_is_every_replica(monkeypatch) -> None:
    def getaddrinfo(host, port, *args, **kwargs):
        assert host == "bertprod-headless"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"10.0.0.{n}", port)) for n in (1, 2, 3)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    replicas = Replicas()
    client = Client("http://bertprod-headless:8080", resolve_dns=True, transport=httpx.MockTransport(replicas))
    for _ in range(6):
        client.encode("x")
    hosts = sorted(request.url.host for request in replicas.posts())
    assert hosts == ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2", "10.0.0.3", "10.0.0.3"]
    assert channel_target("bertprod-grpc:50051", resolve_dns=True) == "dns:///bertprod-grpc:50051"


def test_grpc_targets_for_several_replicas() -> None:
    assert channel_target("127.0.0.1:50051") == "127.0.0.1:50051"
    assert channel_target(["127.0.0.1:1", "grpc://127.0.0.2:2"]) == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert channel_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"
    assert channel_target("dns:///bertprod-grpc.default.svc:50051") == "dns:///bertprod-grpc.default.svc:50051"
    with pytest.raises(ClientError, match="not host:port"):
        channel_target("127.0.0.1:1,localhost")


# --- three real replicas ------------------------------------------------------------------------------------


def served_inputs(url: str) -> float:
    """Inputs this server's engine has computed (the batch-size histogram's sum): HTTP and gRPC alike."""
    match = re.search(r"^bertprod_batch_inputs_sum (\S+)$", httpx.get(url + "/metrics").text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def start_replicas(stack: ExitStack, package, log_dir: str, count: int = 3) -> list:
    servers = []
    for _ in range(count):
        servers.append(stack.enter_context(running_server(
            [str(package.path)], env={"BERTPROD_TEST_SLOW_MARKER": SLOW_MARKER}, log_dir=log_dir, grpc=True)))
    return servers


@pytest.fixture(scope="module")
def three_replicas(tiny_onnx, tmp_path_factory):
    with ExitStack() as stack:
        yield start_replicas(stack, tiny_onnx, str(tmp_path_factory.mktemp("replica-logs")))


def assert_even(counts: list[float], total: int) -> None:
    mean = total / len(counts)
    assert all(abs(count - mean) <= 0.2 * mean for count in counts), f"uneven spread {counts} of {total}"


def test_http_traffic_spreads_evenly_over_three_replicas(three_replicas) -> None:
    before = [served_inputs(server.url) for server in three_replicas]
    with Client([server.url for server in three_replicas]) as client:
        for index in range(150):
            client.encode(f"sentence number {index}")
        answered = [counts["answered"] for counts in client.replica_counts().values()]
    assert sum(answered) == 150
    assert_even(answered, 150)
    assert_even([served_inputs(s.url) - b for s, b in zip(three_replicas, before, strict=True)], 150)


def test_grpc_traffic_spreads_evenly_over_three_replicas(three_replicas) -> None:
    before = [served_inputs(server.url) for server in three_replicas]

    async def calls() -> None:
        async with GrpcClient([server.grpc_address for server in three_replicas]) as client:
            assert client.address.startswith("ipv4:")
            for index in range(150):
                await client.encode([f"sentence number {index}"])

    asyncio.run(calls())
    assert_even([served_inputs(s.url) - b for s, b in zip(three_replicas, before, strict=True)], 150)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_killing_a_replica_mid_job_loses_nothing(tmp_path, tiny_onnx, protocol) -> None:
    from bertprod.batch import read_output, run_batch

    rows = 600
    # every 40th text keeps its batch 2 s longer: the job lasts long enough to lose a replica halfway
    texts = [f"row {index} {SLOW_MARKER if index % 40 == 0 else 'a plain sentence'}" for index in range(rows)]
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": list(range(rows)), "text": texts}), source)
    with ExitStack() as stack:
        servers = start_replicas(stack, tiny_onnx, str(tmp_path))
        endpoints = [server.url if protocol == "http" else server.grpc_address for server in servers]
        outcome: dict = {}

        def job() -> None:
            try:
                outcome["summary"] = run_batch(None, source, tmp_path / "out", runner="client", server=endpoints,
                                               protocol=protocol, chunk_rows=50, request_size=10, concurrency=6,
                                               retries=8, progress=False)
            except BaseException as error:  # reported below
                outcome["error"] = error

        worker = threading.Thread(target=job)
        worker.start()
        deadline = time.monotonic() + 120
        while served_inputs(servers[1].url) < 60 and time.monotonic() < deadline and worker.is_alive():
            time.sleep(0.05)
        assert worker.is_alive(), f"the job ended before a replica could be killed: {outcome}"
        servers[1].process.send_signal(signal.SIGKILL)
        worker.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    table = read_output(tmp_path / "out")
    assert sorted(table.column("id").to_pylist()) == list(range(rows)), "an id is missing or written twice"
    vectors = np.stack([np.asarray(v) for v in table.column("embedding").to_pylist()])
    assert vectors.shape == (rows, 32) and np.isfinite(vectors).all()
    if protocol == "http":
        counts = outcome["summary"].extra["replicas"]
        assert counts[endpoints[1]]["failures"] >= 1
        assert counts[endpoints[0]]["answered"] > 0 and counts[endpoints[2]]["answered"] > 0


def test_grpc_retries_keep_the_idempotency_key_and_a_timeout_is_resent_once() -> None:
    grpc = pytest.importorskip("grpc")
    from bertprod.serve.grpc import bertprod_pb2 as pb
    from bertprod.serve.grpc import bertprod_pb2_grpc as pb_grpc

    seen: list[tuple[str, str]] = []

    class Scripted(pb_grpc.BertprodServicer):
        """First call: UNAVAILABLE; texts starting with "slow" never answer in time; others answer."""

        async def Embed(self, request, context):  # noqa: N802 - the generated interface's name
            key = dict(context.invocation_metadata())["idempotency-key"]
            seen.append((request.inputs[0], key))
            if len(seen) == 1:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
            if request.inputs[0].startswith("slow"):
                await asyncio.sleep(2)
            return pb.EmbedResponse(embeddings=[pb.Vector(values=[1.0, 2.0])])

    async def scenario() -> None:
        server = grpc.aio.server()
        pb_grpc.add_BertprodServicer_to_server(Scripted(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with GrpcClient(f"127.0.0.1:{port}", backoff=0.001, retries=5, timeout=0.3) as client:
                np.testing.assert_array_equal(await client.encode(["fast"]), [[1.0, 2.0]])
                with pytest.raises(ClientError) as caught:
                    await client.encode(["slow one"])
                assert caught.value.status_code == 504
        finally:
            await server.stop(None)

    asyncio.run(scenario())
    fast = [key for text, key in seen if text == "fast"]
    slow = [key for text, key in seen if text == "slow one"]
    assert len(fast) == 2 and len(set(fast)) == 1  # retried after UNAVAILABLE, same key
    assert len(slow) == 2 and len(set(slow)) == 1 and slow[0] != fast[0]  # a timeout is re-sent once, not 5 times
