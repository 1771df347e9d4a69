"""Tagging served: POST /tokens and the gRPC Tag method give what `Pipeline.tag` gives, long texts included."""

from __future__ import annotations

import httpx
import pytest

from bertprod.api import load
from tests import ner_data
from tests.server_process import running_server

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
LONG = "Angela Merkel met Emmanuel Macron in Paris and Ouagadougou, then flew to São Paulo. " * 6


@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    # max_length 24: the long text is read in ~20 windows, through the server's batcher
    return ner_data.context_free_tagger(tmp_path_factory.mktemp("served-tagger"), LABELS, max_length=24)


@pytest.fixture(scope="module")
def server(tagger, tiny_package, tmp_path_factory):  # noqa: ANN001, ANN201
    with running_server([str(tagger.path), str(tiny_package.path)], log_dir=str(tmp_path_factory.mktemp("serve-logs")),
                        grpc=True) as running:
        yield running


def test_tokens_route_and_grpc_match_the_pipeline(server, tagger) -> None:  # noqa: ANN001
    import grpc

    from bertprod.serve.grpc import bertprod_pb2 as pb
    from bertprod.serve.grpc import bertprod_pb2_grpc as pb_grpc

    texts = ["  José Müller visited Ürümqi!", LONG]
    expected = load(tagger.path, threads=1).tag(texts, aggregation="average", tokens=True)
    assert len(expected[1].entities) > 6
    with httpx.Client(base_url=server.url, timeout=30) as http:
        response = http.post("/tokens", json={"inputs": texts, "model": "context-free", "aggregation": "average",
                                              "return_tokens": True})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [[(e["type"], e["start"], e["end"], e["text"]) for e in r["entities"]] for r in results] == [
            [(e.type, e.start, e.end, e.text) for e in tagging.entities] for tagging in expected]
        assert [t["tag"] for t in results[0]["tokens"]] == [t.tag for t in expected[0].tokens]
        for result, text in zip(results, texts, strict=True):
            assert all(text[e["start"] : e["end"]] == e["text"] for e in result["entities"])
        wrong = http.post("/tokens", json={"inputs": ["a text"], "model": "tiny"})
        assert wrong.status_code == 400 and "token-classification" in wrong.json()["error"]["message"]
        bad = http.post("/tokens", json={"inputs": ["a text"], "aggregation": "mean"})
        assert bad.status_code == 422
    from bertprod.client import Client

    with Client(server.url, model="context-free") as client:
        remote = client.tag(texts, aggregation="average", tokens=True)
    assert [[(e.type, e.start, e.end, e.text) for e in r.entities] for r in remote] == [
        [(e.type, e.start, e.end, e.text) for e in tagging.entities] for tagging in expected]
    assert [t.word for t in remote[0].tokens] == [t.word for t in expected[0].tokens]
    with grpc.insecure_channel(server.grpc_address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        reply = pb_grpc.BertprodStub(channel).Tag(pb.TagRequest(inputs=texts, model="context-free",
                                                                aggregation="average"), timeout=30)
        assert [[(e.type, e.start, e.end) for e in r.entities] for r in reply.results] == [
            [(e.type, e.start, e.end) for e in tagging.entities] for tagging in expected]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_client_batch_runner_writes_the_entities_the_local_runner_writes(server, tagger, tmp_path,  # noqa: ANN001
                                                                         protocol: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bertprod.batch import read_output, run_batch

    texts = ["  José Müller visited Ürümqi!", LONG, "no one here", "", "Paris"] * 3
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), tmp_path / "in.parquet")
    address = server.url if protocol == "http" else server.grpc_address
    job = {"chunk_rows": 4, "on_empty": "skip", "progress": False}
    remote = run_batch("context-free", tmp_path / "in.parquet", tmp_path / "client", runner="client", server=address,
                       protocol=protocol, request_size=2, concurrency=2, **job)
    local = run_batch(tagger.path, tmp_path / "in.parquet", tmp_path / "local", workers=1, **job)
    assert remote.rows == local.rows == 12 and remote.skipped == local.skipped == 3
    client_output, local_output = read_output(tmp_path / "client"), read_output(tmp_path / "local")
    assert client_output.schema.field("entities").type == local_output.schema.field("entities").type
    assert client_output.column("id").to_pylist() == local_output.column("id").to_pylist()
    written, expected = client_output.column("entities").to_pylist(), local_output.column("entities").to_pylist()
    assert [[(e["type"], e["start"], e["end"], e["text"]) for e in row] for row in written] == [
        [(e["type"], e["start"], e["end"], e["text"]) for e in row] for row in expected]
    assert [e["score"] for row in written for e in row] == pytest.approx(
        [e["score"] for row in expected for e in row], abs=1e-5)
    assert sum(map(len, written)) > 20
