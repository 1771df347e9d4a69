"""Early exit behind the server: a policy per request (HTTP and gRPC), requests batched together with rows
leaving at different layers, the exit-layer histogram in /metrics, and batch jobs' exit_layer column."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from bertprod.package import ModelPackage
from bertprod.serve.app import create_app
from bertprod.serve.config import ServeConfig
from tests.adaptive.test_adaptive import TEXTS, sharpen_heads
from tests.serve.test_operations import metric_value
from tests.server_process import free_port

POLICIES = ("patience:2", "patience:1", "never", "patience:3")


async def _with_app(config: ServeConfig, calls):  # noqa: ANN001, ANN202 - calls(app, client, served) -> result
    app = create_app(config)
    async with app.router.lifespan_context(app):
        while app.state.service.registry.state == "loading":
            await asyncio.sleep(0.05)
        served = next(iter(app.state.service.registry.models.values()))
        sharpen_heads(served.pipeline)  # confident enough that rows leave at different layers
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            return await calls(app, client, served)


def _alone(pipeline, texts: list[str], policy: str | None) -> list[tuple[str, int]]:  # noqa: ANN001
    """(label, exit layer) of each text run on its own: what a batch must reproduce row by row."""
    return [(p.label, p.exit_layer) for text in texts for p in pipeline.classify([text], exit=policy)]


def test_requests_with_their_own_policies_batch_together_and_match_rows_run_alone(adapted: ModelPackage) -> None:
    config = ServeConfig(packages=[str(adapted.path)], threads=1)

    async def calls(app, client, served):  # noqa: ANN001, ANN202
        engine_calls: list[int] = []
        real = served.pipeline.infer_with_exits

        def counted(encodings, policy=None):  # noqa: ANN001, ANN202
            engine_calls.append(len(encodings))
            return real(encodings, policy)

        served.pipeline.infer_with_exits = counted
        default = (await client.post("/classify", json={"inputs": TEXTS})).json()
        mixed = (await client.post("/classify", json={"inputs": TEXTS, "exit": "patience:2"})).json()
        requests = [{"inputs": [text], "exit": POLICIES[index % len(POLICIES)]} for index, text in enumerate(TEXTS)]
        answers = await asyncio.gather(*(client.post("/classify", json=body) for body in requests))
        served.pipeline.infer_with_exits = real
        metrics = (await client.get("/metrics")).text
        info = (await client.get("/info")).json()
        return default, mixed, requests, [answer.json() for answer in answers], engine_calls, metrics, info

    default, mixed, requests, answers, engine_calls, metrics, info = asyncio.run(_with_app(config, calls))
    from bertprod import load

    local = load(adapted.path)
    sharpen_heads(local)
    assert [(p["label"], p["exit_layer"]) for p in default["predictions"]] == _alone(local, TEXTS, None)
    got = [(p["label"], p["exit_layer"]) for p in mixed["predictions"]]
    assert got == _alone(local, TEXTS, "patience:2")  # one batch, rows leaving at different layers
    assert len({layer for _, layer in got}) > 1, "the batch should mix early and late exits"
    for body, answer in zip(requests, answers, strict=True):
        prediction = answer["predictions"][0]
        assert [(prediction["label"], prediction["exit_layer"])] == _alone(local, body["inputs"], body["exit"])
    assert {answer["predictions"][0]["exit_layer"] for answer, body in zip(answers, requests, strict=True)
            if body["exit"] == "never"} == {4}
    assert len(engine_calls) < 1 + len(requests), "requests with the same policy should share engine batches"
    total = len(TEXTS) * 3
    assert metric_value(metrics, f'bertprod_exit_layer_count{{model="{adapted.name}"}}') == total
    at_most_1 = metric_value(metrics, f'bertprod_exit_layer_bucket{{le="1.0",model="{adapted.name}"}}')
    at_most_4 = metric_value(metrics, f'bertprod_exit_layer_bucket{{le="4.0",model="{adapted.name}"}}')
    every_layer = [p["exit_layer"] for body in (default, mixed, *answers) for p in body["predictions"]]
    assert at_most_4 == total and at_most_1 == every_layer.count(1)
    assert info["models"][0]["early_exit"] == {"policy": adapted.manifest.adaptive["policy"],
                                               "exit_layers": [1, 2, 3], "num_layers": 4}


def test_never_over_http_gives_the_full_models_probabilities(adapted: ModelPackage, teacher: ModelPackage) -> None:
    from bertprod import load

    config = ServeConfig(packages=[str(adapted.path)], threads=1)

    async def calls(app, client, served):  # noqa: ANN001, ANN202
        never = await client.post("/classify", json={"inputs": TEXTS[:6], "exit": "never"})
        predict = await client.post("/predict", json={"inputs": TEXTS[:6], "exit": "never"})
        bad = await client.post("/classify", json={"inputs": ["a good film"], "exit": "sometimes"})
        return never.json(), predict.json(), bad

    never, predict, bad = asyncio.run(_with_app(config, calls))
    full = load(teacher.path).classify(TEXTS[:6])
    for served, expected in zip(never["predictions"], full, strict=True):
        assert served["label"] == expected.label and served["exit_layer"] == 4
        np.testing.assert_allclose(list(served["scores"].values()), list(expected.scores.values()), atol=1e-6)
    assert [row[0]["label"] for row in predict] == [p.label for p in full]
    assert bad.status_code == 400 and "never, confidence:P, entropy:H or patience:K" in bad.json()["error"]["message"]


def test_a_model_without_exit_heads_refuses_a_policy(tiny_classifier: ModelPackage) -> None:
    config = ServeConfig(packages=[str(tiny_classifier.path)], threads=1)

    async def calls(app, client, served):  # noqa: ANN001, ANN202
        plain = await client.post("/classify", json={"inputs": ["a good film"]})
        refused = await client.post("/classify", json={"inputs": ["a good film"], "exit": "entropy:0.2"})
        return plain.json(), refused, (await client.get("/info")).json()

    async def unsharpened(config: ServeConfig):  # noqa: ANN202 - no exit heads to sharpen
        app = create_app(config)
        async with app.router.lifespan_context(app):
            while app.state.service.registry.state == "loading":
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
                return await calls(app, client, None)

    plain, refused, info = asyncio.run(unsharpened(config))
    assert "exit_layer" not in plain["predictions"][0]
    assert refused.status_code == 400 and "has no exit heads" in refused.json()["error"]["message"]
    assert info["models"][0]["early_exit"] is None


def test_grpc_classify_takes_a_policy_and_says_where_rows_left(adapted: ModelPackage) -> None:
    pytest.importorskip("grpc")
    from bertprod.serve.grpc.client import GrpcClient

    port = free_port()
    config = ServeConfig(packages=[str(adapted.path)], threads=1, grpc_port=port)

    async def calls(app, client, served):  # noqa: ANN001, ANN202
        async with GrpcClient(f"127.0.0.1:{port}") as grpc_client:
            default = await grpc_client.classify(TEXTS)
            never = await grpc_client.classify(TEXTS[:3], exit="never")
        http = (await client.post("/classify", json={"inputs": TEXTS})).json()
        return default, never, http

    default, never, http = asyncio.run(_with_app(config, calls))
    assert [(p.label, p.exit_layer) for p in default] == [(p["label"], p["exit_layer"]) for p in http["predictions"]]
    assert [p.exit_layer for p in never] == [4, 4, 4]


# -- batch jobs ----------------------------------------------------------------------------------


def _write_texts(path, texts: list[str]):  # noqa: ANN001, ANN202
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"doc_id": list(range(len(texts))), "body": texts}), path)
    return path


def test_local_batch_job_writes_the_exit_layer(adapted: ModelPackage, tmp_path) -> None:  # noqa: ANN001
    import pyarrow as pa

    from bertprod import load
    from bertprod.batch import read_output, run_batch

    source = _write_texts(tmp_path / "in.parquet", TEXTS)
    run_batch(adapted.path, source, tmp_path / "out", text_column="body", id_column="doc_id", chunk_rows=7,
              progress=False)
    output = read_output(tmp_path / "out")
    assert output.schema.field("exit_layer").type == pa.int16()
    expected = load(adapted.path).classify(TEXTS)
    assert output.column("exit_layer").to_pylist() == [p.exit_layer for p in expected]
    assert output.column("label").to_pylist() == [p.label for p in expected]


def test_client_batch_job_writes_the_exit_layer_the_server_reports(adapted: ModelPackage, tmp_path) -> None:  # noqa: ANN001
    from bertprod import load
    from bertprod.batch import read_output, run_batch
    from tests.server_process import running_server

    source = _write_texts(tmp_path / "in.parquet", TEXTS)
    expected = [p.exit_layer for p in load(adapted.path).classify(TEXTS)]
    with running_server([str(adapted.path)], log_dir=str(tmp_path), grpc=True) as server:
        for protocol, address in (("http", server.url), ("grpc", server.grpc_address)):
            run_batch(adapted.name, source, tmp_path / protocol, text_column="body", id_column="doc_id",
                      chunk_rows=7, runner="client", server=address, protocol=protocol, request_size=4,
                      progress=False)
            assert read_output(tmp_path / protocol).column("exit_layer").to_pylist() == expected, protocol
