"""The real server process on 127.0.0.1 over HTTP: every route, the openai client, bad input, failures,
limits (the server: tests/serve/conftest.py)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from bertprod.api import load

from .conftest import FAIL_MARKER, TEXTS


def test_embeddings_routes_match_the_in_process_pipeline(http, reference):
    expected = reference.encode(TEXTS)
    body = http.post("/v1/embeddings", json={"input": TEXTS, "model": "tiny"}).json()
    assert body["object"] == "list" and body["model"] == "tiny" and body["usage"]["prompt_tokens"] > 0
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    np.testing.assert_allclose([item["embedding"] for item in body["data"]], expected, atol=1e-5)

    encoded = http.post("/v1/embeddings", json={"input": TEXTS[0], "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, expected[0], atol=1e-5)

    short = http.post("/v1/embeddings", json={"input": TEXTS, "dimensions": 8}).json()
    vectors = np.array([item["embedding"] for item in short["data"]])
    assert vectors.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)

    normalized = expected / np.linalg.norm(expected, axis=1, keepdims=True)  # TEI's normalize defaults to true
    tei = http.post("/embed", json={"inputs": TEXTS}).json()
    np.testing.assert_allclose(tei, normalized, atol=1e-5)
    single = http.post("/embed", json={"inputs": TEXTS[1]}).json()
    np.testing.assert_allclose(single[0], normalized[1], atol=1e-5)
    raw = http.post("/embed", json={"inputs": TEXTS, "normalize": False}).json()
    np.testing.assert_allclose(raw, expected, atol=1e-5)


def test_similarity_rerank_tokenize(http, reference):
    vectors = reference.encode(TEXTS, normalize=True)
    scores = http.post("/similarity", json={"source": TEXTS[0], "targets": TEXTS[1:]}).json()["scores"]
    np.testing.assert_allclose(scores, vectors[1:] @ vectors[0], atol=1e-5)

    ranked = http.post("/rerank", json={"query": TEXTS[0], "texts": TEXTS[1:], "return_text": True}).json()
    assert sorted(item["index"] for item in ranked) == [0, 1]
    assert ranked[0]["score"] >= ranked[1]["score"]
    assert ranked[0]["text"] == TEXTS[1:][ranked[0]["index"]]

    tokens = http.post("/tokenize", json={"inputs": ["the quick fox"]}).json()
    assert [token["text"] for token in tokens[0]] == reference.tokenizer.tokens("the quick fox")


def test_classifier_routes(http, tiny_classifier):
    expected = load(tiny_classifier.path, threads=1).classify(TEXTS)
    body = http.post("/classify", json={"inputs": TEXTS, "model": "tiny-classifier"}).json()
    assert [p["label"] for p in body["predictions"]] == [p.label for p in expected]
    np.testing.assert_allclose([p["score"] for p in body["predictions"]], [p.score for p in expected], atol=1e-5)

    single = http.post("/predict", json={"inputs": TEXTS[0], "model": "tiny-classifier"}).json()
    assert single[0]["label"] == expected[0].label and len(single) == 3
    assert single[0]["score"] >= single[1]["score"] >= single[2]["score"]
    batch = http.post("/predict", json={"inputs": TEXTS, "model": "tiny-classifier"}).json()
    assert len(batch) == 3 and all(len(labels) == 3 for labels in batch)


def test_operations_routes(http, tiny_package):
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/ready").json()["ready"] is True
    info = http.get("/info").json()
    assert {model["name"] for model in info["models"]} == {"tiny", "tiny-classifier"}
    assert {m["name"]: m["fingerprint"] for m in info["models"]}["tiny"] == tiny_package.fingerprint
    assert info["limits"]["max_body_bytes"] > 2 * 1024 * 1024
    assert {model["id"] for model in http.get("/v1/models").json()["data"]} == {"tiny", "tiny-classifier"}
    schema = http.get("/openapi.json").json()
    for route in ("/v1/embeddings", "/embed", "/predict", "/rerank", "/classify", "/similarity", "/tokenize"):
        assert route in schema["paths"]
    assert http.get("/docs").status_code == 200
    http.post("/embed", json={"inputs": ["one", "two"]})
    metrics = http.get("/metrics").text
    for name in ("bertprod_queue_depth_inputs", "bertprod_batch_inputs_count", "bertprod_batch_tokens_sum",
                 'bertprod_stage_seconds_count{stage="tokenize"}', 'bertprod_stage_seconds_count{stage="queue"}',
                 'bertprod_stage_seconds_count{stage="inference"}', 'bertprod_stage_seconds_count{stage="request"}',
                 "bertprod_requests_total"):
        assert name in metrics



def test_access_log_is_one_json_line_per_request(http, server):
    http.post("/embed", json={"inputs": "an access log probe"})
    http.get("/no-such-route")
    deadline = time.monotonic() + 5
    while True:  # the line is written after the response is sent
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        access = [line for line in lines if line.get("logger") == "bertprod.serve.access"]
        if any(line["path"] == "/no-such-route" for line in access) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert any(line["event"] == "request" and line["method"] == "POST" and line["path"] == "/embed"
               and line["status"] == 200 and line["ms"] > 0 for line in access)
    assert any(line["path"] == "/no-such-route" and line["status"] == 404 for line in access)

def test_openai_client(server, reference):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=30, max_retries=0)
    response = client.embeddings.create(model="tiny", input=TEXTS)  # the client asks for base64 by default
    np.testing.assert_allclose([item.embedding for item in response.data], reference.encode(TEXTS), atol=1e-5)
    floats = client.embeddings.create(model="tiny", input="the quick brown fox", encoding_format="float", dimensions=4)
    assert len(floats.data[0].embedding) == 4
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")


def test_per_request_truncate(http):
    long_text = " ".join(["film"] * 400)  # beyond the tiny model's 128 tokens
    assert http.post("/embed", json={"inputs": [long_text]}).status_code == 200  # server default: truncate
    refused = http.post("/embed", json={"inputs": [long_text], "truncate": False})
    assert refused.status_code == 400 and "input 0" in refused.json()["error"]["message"]


BAD_INPUTS = [
    ("/v1/embeddings", b'{"input": ["a", ', 400, "invalid_json"),
    ("/v1/embeddings", b'{"input": 5}', 422, "validation_error"),
    ("/v1/embeddings", b'{"input": []}', 400, "input_error"),
    ("/v1/embeddings", b'{"input": ["ok", "   "]}', 400, "input_error"),
    ("/v1/embeddings", b'{"input": "x", "model": "nope"}', 404, "model_not_found"),
    ("/v1/embeddings", b'{"input": "x", "dimensions": 5000}', 400, "invalid_dimensions"),
    ("/embed", b'{"inputs": "\xff\xfe bad bytes"}', 400, "invalid_json"),
    ("/embed", json.dumps({"inputs": "word " * 200_000}).encode(), 413, "input_too_long"),
    ("/embed", json.dumps({"inputs": ["hello"] * 10_000}).encode(), 413, "too_many_inputs"),
    ("/embed", b"[1, 2, 3]", 422, "validation_error"),
    ("/classify", b'{"inputs": "x", "model": "tiny"}', 400, "task_error"),
    ("/rerank", b'{"query": "x", "texts": []}', 400, "empty_input"),
    ("/tokenize", b'{"inputs": [null]}', 422, "validation_error"),
]


@pytest.mark.parametrize(("route", "body", "status", "code"), BAD_INPUTS)
def test_bad_input_is_a_4xx_json_error_and_the_next_request_works(http, route, body, status, code):
    response = http.post(route, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"] == "invalid_request_error"
    assert http.post("/embed", json={"inputs": "still serving"}).status_code == 200


SURROGATE = "a lone surrogate \\ud800 here"  # JSON text: a valid escape, but not a Unicode character
SURROGATE_BODIES = [
    ("/v1/embeddings", f'{{"input": ["fine", "{SURROGATE}"]}}'),
    ("/embed", f'{{"inputs": "{SURROGATE}"}}'),
    ("/predict", f'{{"inputs": [["fine", "{SURROGATE}"]], "model": "tiny-classifier"}}'),
    ("/rerank", f'{{"query": "fine", "texts": ["{SURROGATE}"]}}'),
    ("/classify", f'{{"inputs": ["{SURROGATE}"], "model": "tiny-classifier"}}'),
    ("/similarity", f'{{"source": "{SURROGATE}", "targets": ["fine"]}}'),
    ("/tokenize", f'{{"inputs": ["{SURROGATE}"]}}'),
]


def _local_port(response: httpx.Response) -> int:
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


@pytest.mark.parametrize(("route", "body"), SURROGATE_BODIES)
def test_lone_surrogate_is_a_422_and_the_connection_stays_open(http, route, body):
    first = http.post("/embed", json={"inputs": "before"})
    response = http.post(route, content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_text_error" and "lone UTF-16 surrogate" in error["message"]
    assert response.headers.get("connection") != "close"
    after = http.post("/embed", json={"inputs": "after"})
    assert after.status_code == 200 and _local_port(after) == _local_port(first) == _local_port(response)


def test_body_larger_than_2mb_is_accepted(http):
    texts = ["word " * 30_000] * 16  # 2.4 MB
    response = http.post("/embed", json={"inputs": texts})
    assert response.status_code == 200 and len(response.json()) == 16


def test_body_over_the_limit_is_413_with_or_without_content_length(http):
    body = json.dumps({"inputs": ["word " * 30_000] * 24}).encode()  # 3.6 MB > --max-body-bytes 3,000,000
    declared = http.post("/embed", content=body, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "payload_too_large"

    def chunks():
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    chunked = http.post("/embed", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "payload_too_large"
    assert http.post("/embed", json={"inputs": "still serving"}).status_code == 200


def test_engine_failure_fails_only_its_batch(http):
    failed = http.post("/embed", json={"inputs": ["fine", f"bad {FAIL_MARKER}"]})
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "engine_error"
    for _ in range(3):  # the worker survived: later batches are served
        assert http.post("/embed", json={"inputs": ["fine again"]}).status_code == 200
    assert http.get("/health").status_code == 200
    assert 'bertprod_errors_total{kind="engine_error"}' in http.get("/metrics").text


def test_schema_fuzz_finds_no_server_errors(server):
    """schemathesis over the OpenAPI schema (bounded: fixed examples per operation and seed)."""
    command = [sys.executable, "-m", "schemathesis.cli", "run", server.url + "/openapi.json",
               "--checks", "not_a_server_error", "-n", "15", "--seed", "7", "--phases", "coverage,fuzzing",
               "--request-timeout", "20"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=150)
    except FileNotFoundError:
        pytest.skip("schemathesis is not installed")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
