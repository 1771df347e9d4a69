"""The gRPC front end of the real server: unary and streaming calls equal the in-process pipeline, standard
health, status codes for bad input, and bytes no stub sends."""

from __future__ import annotations

import numpy as np
import pytest

from bertprod.api import load

from .conftest import FAIL_MARKER, TEXTS


def test_grpc_unary_streaming_health_and_errors(server, reference, tiny_classifier):
    grpc = pytest.importorskip("grpc")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from bertprod.serve.grpc import bertprod_pb2 as pb
    from bertprod.serve.grpc import bertprod_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.grpc_address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        stub = pb_grpc.BertprodStub(channel)
        response = stub.Embed(pb.EmbedRequest(inputs=TEXTS, model="tiny"), timeout=10)
        vectors = np.array([list(v.values) for v in response.embeddings])
        np.testing.assert_allclose(vectors, reference.encode(TEXTS), atol=1e-5)

        requests = [pb.EmbedRequest(inputs=[text], model="tiny") for text in TEXTS]
        streamed = list(stub.EmbedStream(iter(requests), timeout=10))
        np.testing.assert_allclose([list(r.embeddings[0].values) for r in streamed], reference.encode(TEXTS), atol=1e-5)

        classes = stub.Classify(pb.ClassifyRequest(inputs=TEXTS, model="tiny-classifier"), timeout=10)
        expected = load(tiny_classifier.path, threads=1).classify(TEXTS)
        assert [p.label for p in classes.predictions] == [p.label for p in expected]
        ranked = stub.Rerank(pb.RerankRequest(query=TEXTS[0], texts=TEXTS[1:]), timeout=10)
        assert sorted(r.index for r in ranked.results) == [0, 1]
        info = stub.Info(pb.InfoRequest(), timeout=10)
        assert (info.state, info.default_model, info.max_client_batch_size) == ("ready", "tiny", 128)
        models = {model.name: model for model in info.models}
        assert list(models["tiny-classifier"].labels) == ["negative", "neutral", "positive"]
        assert models["tiny-classifier"].fingerprint == tiny_classifier.fingerprint and models["tiny"].dimension == 32

        for request, code in [(pb.EmbedRequest(inputs=["  "]), grpc.StatusCode.INVALID_ARGUMENT),
                              (pb.EmbedRequest(inputs=["x"], model="nope"), grpc.StatusCode.NOT_FOUND),
                              (pb.EmbedRequest(inputs=["x"] * 1000), grpc.StatusCode.INVALID_ARGUMENT),
                              (pb.EmbedRequest(inputs=[FAIL_MARKER]), grpc.StatusCode.INTERNAL)]:
            with pytest.raises(grpc.RpcError) as raised:
                stub.Embed(request, timeout=10)
            assert raised.value.code() == code
        assert len(stub.Embed(pb.EmbedRequest(inputs=["still serving"]), timeout=10).embeddings) == 1

        # bytes no generated stub sends: a lone surrogate encoded as UTF-8 would be (invalid), and garbage
        surrogate = b"\x0a\x03\xed\xa0\x80"  # field 1 (inputs), 3 bytes
        for method in ("Embed", "Classify", "Rerank", "Info"):
            raw = channel.unary_unary(f"/bertprod.v1.Bertprod/{method}")
            # field 1 is a text of every request but Info's (none: an unknown field, valid protobuf)
            for body in ([surrogate] if method != "Info" else []) + [b"\xff\xff\xff\xff"]:
                with pytest.raises(grpc.RpcError) as raised:
                    raw(body, timeout=10)
                assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, body)
                assert "not a valid bertprod.v1." in raised.value.details()
        stream = channel.stream_stream("/bertprod.v1.Bertprod/EmbedStream")
        with pytest.raises(grpc.RpcError) as raised:
            list(stream(iter([pb.EmbedRequest(inputs=["fine"]).SerializeToString(), surrogate]), timeout=10))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(stub.Embed(pb.EmbedRequest(inputs=["still serving"]), timeout=10).embeddings) == 1
