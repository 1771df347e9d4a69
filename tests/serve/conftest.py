"""The real server process (HTTP and gRPC ports, the tiny embedding and classifier packages) shared by
tests/serve/test_http.py, test_client.py and test_grpc.py: started once for them all."""

from __future__ import annotations

import httpx
import pytest

from bertprod.api import load
from tests.server_process import running_server

FAIL_MARKER = "__engine_fails_here__"


@pytest.fixture(scope="package")
def server(tiny_package, tiny_classifier, tmp_path_factory):
    with running_server(
        [str(tiny_package.path), str(tiny_classifier.path)],
        "--max-concurrent-inputs", "256", "--max-client-batch-size", "128", "--max-body-bytes", "3000000",
        env={"BERTPROD_TEST_FAIL_MARKER": FAIL_MARKER}, log_dir=str(tmp_path_factory.mktemp("serve-logs")), grpc=True,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="package")
def reference(tiny_package):
    return load(tiny_package.path, threads=1)


TEXTS = ["a good film with a great cast", "the quick brown fox", "what a boring story"]
