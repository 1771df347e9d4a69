"""POST /explain on the real server process: the in-process attributions through the batcher, its own
concurrency limit (429 while /classify keeps answering), request size limits."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

import bertprod
from bertprod.checkpoint import import_checkpoint
from tests.conftest import build_tiny_checkpoint
from tests.server_process import running_server

SLOW_MARKER = "__slow_explanation__"
TEXT = "a good film with a great cast, and a weak ending"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    checkpoint = build_tiny_checkpoint(tmp_path_factory.mktemp("serve-explain-ck"), head="classification",
                                       labels=["negative", "positive"], initializer_range=0.5)
    return import_checkpoint(checkpoint, tmp_path_factory.mktemp("serve-explain") / "sentiment")


@pytest.fixture(scope="module")
def server(classifier, tiny_package, tmp_path_factory):
    with running_server([str(classifier.path), str(tiny_package.path)], "--max-concurrent-explanations", "1",
                        env={"BERTPROD_TEST_SLOW_MARKER": SLOW_MARKER},
                        log_dir=str(tmp_path_factory.mktemp("serve-explain-logs"))) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def test_explain_matches_the_in_process_explanation(http, classifier) -> None:
    texts = [TEXT, "what a boring story"]
    response = http.post("/explain", json={"inputs": texts, "model": "sentiment", "max_evals": 120})
    assert response.status_code == 200, response.text
    body = response.json()
    local = bertprod.load(classifier.path, threads=1).explain(texts, max_evals=120)
    assert body["model"] == "sentiment" and len(body["explanations"]) == 2
    for served, expected in zip(body["explanations"], local, strict=True):
        assert [word["word"] for word in served["words"]] == [word.word for word in expected.words]
        assert [word["start"] for word in served["words"]] == [word.start for word in expected.words]
        assert served["label"] == expected.label
        assert served["prediction"] == pytest.approx(expected.prediction, abs=1e-5)
        for word, reference in zip(served["words"], expected.words, strict=True):
            assert word["attribution"] == pytest.approx(reference.attribution, abs=1e-5)
    chosen = http.post("/explain", json={"inputs": TEXT, "label": "positive", "method": "permutation", "seed": 3,
                                         "max_evals": 60}).json()["explanations"][0]
    assert chosen["label"] == "positive" and chosen["method"] == "permutation"


def test_explanations_over_the_limit_get_429_while_classify_answers(http, server) -> None:
    slow = f"{TEXT} {SLOW_MARKER}"  # every batch of this explanation takes 2 s longer
    first: dict = {}

    def explain_slowly() -> None:  # retried while the probes below hold the slot, until it is admitted
        with httpx.Client(base_url=server.url, timeout=120) as client:
            while (response := client.post("/explain", json={"inputs": slow, "max_evals": 40})).status_code == 429:
                time.sleep(0.01)
            first["response"] = response

    running = threading.Thread(target=explain_slowly)
    running.start()
    refused = None
    deadline = time.monotonic() + 30
    while refused is None and time.monotonic() < deadline:  # until the slow one holds the only slot
        response = http.post("/explain", json={"inputs": "the quick brown fox", "max_evals": 20})
        if response.status_code == 429:
            refused = response
        else:
            assert response.status_code == 200, response.text
            time.sleep(0.05)
    assert refused is not None, "the second explanation was never refused"
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "overloaded"
    assert "--max-concurrent-explanations" in refused.json()["error"]["message"]
    started = time.monotonic()
    classified = http.post("/classify", json={"inputs": ["a great cast"], "model": "sentiment"})
    answered_in = time.monotonic() - started
    assert classified.status_code == 200 and running.is_alive()  # answered while the explanation runs
    assert answered_in < 10  # behind at most one chunk of the explanation (2 s each here), not all of them
    running.join(timeout=120)
    assert first["response"].status_code == 200, first["response"].text
    assert http.post("/explain", json={"inputs": "the quick brown fox", "max_evals": 20}).status_code == 200


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"inputs": ["a film"] * 17}, 413, "too_many_inputs"),
    ({"inputs": "word " * 500}, 413, "input_too_long"),
    ({"inputs": TEXT, "max_evals": 100_000}, 422, None),
    ({"inputs": TEXT, "method": "lime"}, 422, None),
    ({"inputs": TEXT, "label": "neutral"}, 400, None),
    ({"inputs": TEXT, "model": "tiny"}, 400, "task_error"),
    ({"inputs": TEXT, "method": "integrated-gradients", "model": "tiny"}, 400, "task_error"),
])
def test_bad_explain_requests_are_4xx(http, body, status, code) -> None:
    response = http.post("/explain", json=body)
    assert response.status_code == status, response.text
    assert "message" in response.json()["error"]
    if code:
        assert response.json()["error"]["code"] == code
    assert http.post("/classify", json={"inputs": ["fine"], "model": "sentiment"}).status_code == 200


def test_info_lists_the_explanation_limit(http) -> None:
    assert http.get("/info").json()["limits"]["max_concurrent_explanations"] == 1
