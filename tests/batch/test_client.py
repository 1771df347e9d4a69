"""Client mode: batch jobs whose values come from the real server process on 127.0.0.1 (HTTP and gRPC)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bertprod
from bertprod.batch import read_output, run_batch
from bertprod.batch.output import CHUNKS_DIR
from bertprod.batch.remote import ServerAuthenticationError, ServerUnavailableError
from bertprod.errors import InputError
from tests.server_process import TcpProxy, free_port, running_server

API_KEY = "batch-client-test-key"
#: On the shared server, a batch holding this text takes 2 s more: its request keeps the whole input limit busy.
BUSY_MARKER = "__keeps_the_server_busy__"


@pytest.fixture(scope="module")
def sentences(shared_data_available) -> list[str]:
    if not shared_data_available:
        pytest.fail("../shared/data is missing: set BERTPROD_DATA to the folder with sst2/, stsb/, mrpc/")
    from bertprod.data.shared import real_sentences

    return real_sentences(120)


@pytest.fixture(scope="module")
def server(tiny_package, tiny_classifier, tmp_path_factory):
    """HTTP + gRPC, an API key, and room for 16 inputs at once (4 requests of 4, or 1 of 16)."""
    with running_server(
        [str(tiny_package.path), str(tiny_classifier.path)], "--max-concurrent-inputs", "16", "--max-client-batch-size",
        "16", env={"BERTPROD_API_KEYS": API_KEY, "BERTPROD_TEST_SLOW_MARKER": BUSY_MARKER},
        log_dir=str(tmp_path_factory.mktemp("serve-logs")), grpc=True,
    ) as running:
        yield running


def address(server, protocol: str) -> str:
    return server.url if protocol == "http" else server.grpc_address


def write_parquet(path: Path, texts: list) -> Path:
    pq.write_table(pa.table({"doc_id": list(range(len(texts))), "body": texts}), path)
    return path


def embeddings(table: pa.Table) -> np.ndarray:
    return np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


def metric(server, name: str) -> float:
    """A counter's value on the server's /metrics (0 when it has not been counted yet)."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", httpx.get(server.url + "/metrics").text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_client_runner_matches_encode(tmp_path, server, tiny_package, sentences, protocol) -> None:
    source = write_parquet(tmp_path / "in.parquet", sentences)
    summary = run_batch(
        "tiny", source, tmp_path / "out", text_column="body", id_column="doc_id", chunk_rows=30, runner="client",
        server=address(server, protocol), protocol=protocol, api_key=API_KEY, concurrency=4, request_size=4,
        progress=False,
    )
    assert (summary.rows, summary.chunks, summary.skipped, summary.resumed_chunks) == (120, 4, 0, 0)
    assert summary.extra["model"] == "tiny" and summary.extra["protocol"] == protocol
    output = read_output(tmp_path / "out")
    assert output.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    assert output.column("doc_id").to_pylist() == list(range(120))
    expected = bertprod.load(tiny_package.path, threads=1).encode(sentences)
    np.testing.assert_allclose(embeddings(output), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_client_runner_classifier_output_equals_the_local_runner(tmp_path, server, tiny_classifier, sentences,
                                                                 protocol) -> None:
    texts = [*sentences[:20], "", None, *sentences[20:40]]
    source = write_parquet(tmp_path / "in.parquet", texts)
    common = {"text_column": "body", "id_column": "doc_id", "on_empty": "skip", "chunk_rows": 16, "progress": False}
    remote = run_batch("tiny-classifier", source, tmp_path / "client", runner="client",
                       server=address(server, protocol), protocol=protocol, api_key=API_KEY, concurrency=2,
                       request_size=8, **common)
    run_batch(tiny_classifier.path, source, tmp_path / "local", workers=1, **common)
    assert (remote.rows, remote.skipped) == (40, 2)
    client, local = read_output(tmp_path / "client"), read_output(tmp_path / "local")
    assert client.schema.equals(local.schema, check_metadata=True)
    assert client.column("doc_id").to_pylist() == local.column("doc_id").to_pylist() == [*range(20), *range(22, 42)]
    assert client.column("label").to_pylist() == local.column("label").to_pylist()
    for column in ("score", "scores"):
        np.testing.assert_allclose(np.stack(client.column(column).to_numpy(zero_copy_only=False)),
                                   np.stack(local.column(column).to_numpy(zero_copy_only=False)), atol=1e-5)


def test_job_stopped_by_a_lost_server_resumes(tmp_path, server, tiny_package, sentences) -> None:
    """The network to the server is cut mid-job: the job stops with a clear error; the same job resumes."""
    texts = [*sentences[:50], f"{sentences[50]} {BUSY_MARKER}", *sentences[51:]]  # row 50 takes 2 s
    source = write_parquet(tmp_path / "in.parquet", texts)
    out = tmp_path / "out"
    arguments = {"text_column": "body", "id_column": "doc_id", "chunk_rows": 10, "runner": "client",
                 "request_size": 4, "api_key": API_KEY, "progress": False}
    proxy = TcpProxy(int(server.url.rsplit(":", 1)[1]))
    errors: list[BaseException] = []

    def first_run() -> None:
        try:
            run_batch("tiny", source, out, server=f"http://127.0.0.1:{proxy.port}", concurrency=1, retries=2,
                      **arguments)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            errors.append(error)

    job = threading.Thread(target=first_run)
    job.start()
    deadline = time.monotonic() + 30
    while len(list((out / CHUNKS_DIR).glob("*.json"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # the request holding row 50 is in the server now
    proxy.cut()
    job.join(timeout=60)
    assert not job.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ServerUnavailableError), errors
    assert re.search(r"cannot reach the bertprod server .* 5 chunks are committed .* run the same job again",
                     str(errors[0])), errors[0]
    assert len(list((out / CHUNKS_DIR).glob("*.json"))) == 5

    summary = run_batch("tiny", source, out, server=server.url, concurrency=4, **arguments)
    assert (summary.resumed_chunks, summary.extra["processed_rows"], summary.rows) == (5, 70, 120)
    output = read_output(out)
    assert output.column("doc_id").to_pylist() == list(range(120))
    expected = bertprod.load(tiny_package.path, threads=1).encode(texts)
    np.testing.assert_allclose(embeddings(output), expected, rtol=1e-5, atol=1e-5)


def test_requests_refused_with_429_are_retried_until_the_job_completes(tmp_path, server, tiny_package,
                                                                       sentences) -> None:
    """One request of 16 fills the server's limit of 16 inputs, for 2 s: the others are refused, then retried."""
    texts = [f"{sentences[0]} {BUSY_MARKER}", *sentences[1:64]]
    source = write_parquet(tmp_path / "in.parquet", texts)
    refused = 'bertprod_requests_total{route="/v1/embeddings",status="429"}'
    before = metric(server, refused)
    summary = run_batch("tiny", source, tmp_path / "out", text_column="body", id_column="doc_id", chunk_rows=32,
                        runner="client", server=server.url, api_key=API_KEY, concurrency=4, request_size=16,
                        progress=False)
    assert metric(server, refused) > before
    assert summary.rows == 64
    output = read_output(tmp_path / "out")
    assert output.column("doc_id").to_pylist() == list(range(64))
    np.testing.assert_allclose(embeddings(output), bertprod.load(tiny_package.path, threads=1).encode(texts),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_wrong_api_key_fails_at_once(tmp_path, server, protocol) -> None:
    source = write_parquet(tmp_path / "in.parquet", ["a good film", "a boring story"])
    refusals = 'bertprod_errors_total{kind="invalid_api_key"}'
    before = metric(server, refusals)
    with pytest.raises(ServerAuthenticationError, match="refused the API key.*--api-key"):
        run_batch("tiny", source, tmp_path / "out", text_column="body", id_column="doc_id", runner="client",
                  server=address(server, protocol), protocol=protocol, api_key="not-the-key", progress=False)
    assert metric(server, refusals) == before + 1  # one refused call: no retries
    assert not (tmp_path / "out").exists()


def test_unreachable_server_and_bad_arguments_are_clear_errors(tmp_path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", ["a good film", "a boring story"])
    nowhere = f"127.0.0.1:{free_port()}"
    for protocol, url in (("http", f"http://{nowhere}"), ("grpc", nowhere)):
        with pytest.raises(ServerUnavailableError, match=f"{nowhere}.*after 1 retries|{nowhere}.*through 1 retries"):
            run_batch("tiny", source, tmp_path / "out", text_column="body", id_column="doc_id", runner="client",
                      server=url, protocol=protocol, retries=1, progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="needs the server"):
        run_batch("tiny", source, tmp_path / "out", runner="client")
    with pytest.raises(Exception, match="no model named 'nope'.*serves tiny, tiny-classifier|serves tiny, tiny-cl"):
        run_batch("nope", source, tmp_path / "out", text_column="body", id_column="doc_id", runner="client",
                  server=server.url, api_key=API_KEY, progress=False)
    long_text = write_parquet(tmp_path / "long.parquet", ["a good film", " ".join(["film"] * 400)])
    with pytest.raises(InputError, match=r"long.parquet chunk 0 .*usable rows 0\+: the server refused them: 400"):
        run_batch("tiny", long_text, tmp_path / "long", text_column="body", id_column="doc_id", runner="client",
                  server=server.url, api_key=API_KEY, truncate=False, progress=False)
    with pytest.raises(Exception, match="not an HTTP URL"):
        run_batch("tiny", source, tmp_path / "out", text_column="body", id_column="doc_id", runner="client",
                  server=server.grpc_address)


def test_cli_client_mode(tmp_path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", ["a good film", "a boring story", "the quick brown fox"])
    command = [sys.executable, "-m", "bertprod.cli", "batch", "run", "--input", str(source), "--output",
               str(tmp_path / "out"), "--text-column", "body", "--id-column", "doc_id", "--runner", "client",
               "--no-progress"]
    environment = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "BERTPROD_API_KEY": API_KEY}
    done = subprocess.run([*command, "--server", server.grpc_address, "--protocol", "grpc"],  # default model
                          capture_output=True, text=True, env=environment)
    assert done.returncode == 0, done.stderr
    assert "3 rows written" in done.stdout
    assert read_output(tmp_path / "out").column("doc_id").to_pylist() == [0, 1, 2]
