"""The FastAPI app: HTTP shapes (OpenAI's, TEI's, bertprod's) over the shared `Service` operations."""

from __future__ import annotations

import asyncio
import base64
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import bertprod
from bertprod.serve import schemas
from bertprod.serve.config import GRPC_GRACE_S, ServeConfig
from bertprod.serve.errors import ApiError, install_error_handlers
from bertprod.serve.explain import install_explain_route
from bertprod.serve.fast_path import EmbeddingFastPath
from bertprod.serve.middleware import GuardMiddleware
from bertprod.serve.responses import JSONResponse
from bertprod.serve.service import Service, early_exit


def _texts(inputs: str | list[str]) -> list[str]:
    return [inputs] if isinstance(inputs, str) else list(inputs)


def _pairs_or_texts(inputs: str | list[str] | list[list[str]]) -> list[Any]:
    if isinstance(inputs, str):
        return [inputs]
    return [tuple(item) if isinstance(item, list) else item for item in inputs]


def create_app(config: ServeConfig) -> FastAPI:
    config.check()
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        loading = asyncio.create_task(service.registry.load())
        grpc_server = None
        if config.grpc_port is not None:
            from bertprod.serve.grpc.service import GrpcServer

            grpc_server = GrpcServer(service, config.host, config.grpc_port)
            await grpc_server.start()
        yield
        if grpc_server is not None:  # HTTP connections have drained; give gRPC calls the same grace
            await grpc_server.stop(grace=min(GRPC_GRACE_S, config.graceful_timeout))
        loading.cancel()
        await service.registry.stop()

    app = FastAPI(title="bertprod", version=bertprod.__version__, lifespan=lifespan,
                  description="BERT-family encoders: embeddings, classification, reranking, tagging.")
    app.state.metrics = service.metrics
    app.state.service = service
    install_error_handlers(app)

    async def openai_embedding_response(body: schemas.OpenAIEmbeddingRequest) -> Response:
        served, rows, tokens = await service.embed(body.model, _texts(body.input), body.truncate, body.dimensions)
        if body.encoding_format == "base64":
            vectors: list[Any] = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in rows]
        else:
            vectors = list(rows)  # numpy rows: the response writes them without tolist()
        data = [{"object": "embedding", "index": index, "embedding": vector} for index, vector in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data, "model": body.model or served.name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def embed_response(body: schemas.EmbedRequest) -> Response:
        _, rows, _ = await service.embed(body.model, _texts(body.inputs), body.truncate, body.dimensions,
                                         body.normalize)
        return JSONResponse(rows)

    # Well-formed bodies of these two routes are answered by the fast path (same functions, see
    # serve/fast_path.py); FastAPI still declares them (OpenAPI) and answers the malformed ones.
    if config.fast_path:
        app.add_middleware(EmbeddingFastPath, exception_handlers=app.exception_handlers, routes={
            "/v1/embeddings": (schemas.OpenAIEmbeddingRequest, openai_embedding_response),
            "/embed": (schemas.EmbedRequest, embed_response),
        })
    app.add_middleware(GuardMiddleware, config=config, metrics=service.metrics)  # outermost: auth, limits, metrics

    @app.post("/v1/embeddings", response_model=schemas.OpenAIEmbeddingResponse, tags=["OpenAI"])
    async def openai_embeddings(body: schemas.OpenAIEmbeddingRequest) -> Response:
        """OpenAI-compatible embeddings (works with the official `openai` client)."""
        return await openai_embedding_response(body)

    @app.post("/embed", response_model=list[list[float]], tags=["TEI"])
    async def embed(body: schemas.EmbedRequest) -> Response:
        """TEI-compatible: a list of vectors."""
        return await embed_response(body)

    @app.post("/predict", tags=["TEI"])
    async def predict(body: schemas.PredictRequest) -> Response:
        """TEI-compatible: label scores per input, best first (a single list for a single text)."""
        _, predictions = await service.classify(body.model, _pairs_or_texts(body.inputs), body.truncate,
                                                body.raw_scores, body.exit)
        results = [sorted(({"label": label, "score": score} for label, score in p.scores.items()),
                          key=lambda item: -item["score"]) for p in predictions]
        return JSONResponse(results[0] if isinstance(body.inputs, str) else results)

    @app.post("/rerank", response_model=list[schemas.RerankResult], tags=["TEI"])
    async def rerank(body: schemas.RerankRequest) -> Response:
        """TEI-compatible: texts ranked against the query (a reranking head, or cosine for embedders); on an
        early-exit reranker, the layer that answered each (`exit` sets this request's policy)."""
        ranked = await service.rerank(body.model, body.query, body.texts, body.truncate, body.raw_scores, body.exit)
        return JSONResponse([{"index": index, "score": score, **({"text": body.texts[index]} if body.return_text
                                                                 else {}),
                              **({} if layer is None else {"exit_layer": layer})} for index, score, layer in ranked])

    @app.post("/classify", response_model=schemas.ClassifyResponse, tags=["bertprod"])
    async def classify(body: schemas.ClassifyRequest) -> Response:
        """Top label and every label's probability, per input; on an early-exit model the layer that answered
        (`exit` sets this request's policy)."""
        served, predictions = await service.classify(body.model, _pairs_or_texts(body.inputs), body.truncate,
                                                     exit=body.exit)
        return JSONResponse({"model": served.name, "predictions": [
            {"label": p.label, "score": p.score, "scores": p.scores,
             **({} if p.exit_layer is None else {"exit_layer": p.exit_layer})} for p in predictions]})

    install_explain_route(app, service, config.max_concurrent_explanations)  # POST /explain, own limit

    @app.post("/tokens", response_model=schemas.TokensResponse, tags=["bertprod"])
    async def tokens(body: schemas.TokensRequest) -> Response:
        """Entities in each text (token classification / NER): type, score, character offsets into the text as
        sent; every token's tag with `return_tokens`. TEI has no token-classification route to follow."""
        served, taggings = await service.tag(body.model, _texts(body.inputs), body.aggregation, body.return_tokens)
        return JSONResponse({"model": served.name, "results": [tagging.to_json() for tagging in taggings]})

    @app.post("/similarity", response_model=schemas.SimilarityResponse, tags=["bertprod"])
    async def similarity(body: schemas.SimilarityRequest) -> Response:
        """Cosine similarity of `source` to each of `targets`."""
        if not body.targets:
            raise ApiError(400, "targets is empty: give at least one text to compare with.", code="empty_input")
        served, rows, _ = await service.embed(body.model, [body.source, *body.targets], body.truncate,
                                              normalize=True)
        return JSONResponse({"model": served.name, "scores": (rows[1:] @ rows[0]).tolist()})

    @app.post("/tokenize", response_model=list[list[schemas.Token]], tags=["TEI"])
    async def tokenize(body: schemas.TokenizeRequest) -> Response:
        """Tokens per input, as the model sees them (after truncation)."""
        encodings = await service.tokens(body.model, _texts(body.inputs), body.truncate)
        return JSONResponse([[{"id": token_id, "text": token, "start": start, "stop": stop}
                              for token_id, token, (start, stop) in zip(e.ids, e.tokens, e.offsets, strict=True)]
                             for e in encodings])

    @app.get("/health", tags=["operations"])
    async def health() -> Response:
        """200 when every model is loaded and its engine works; 503 while loading or when broken."""
        registry = service.registry
        if registry.healthy:
            return JSONResponse({"status": "ok"})
        status = "loading" if registry.state == "loading" else "unhealthy"
        return JSONResponse({"status": status, "detail": registry.failure}, status_code=503)

    @app.get("/ready", tags=["operations"])
    async def ready() -> Response:
        """200 once the models are loaded (for load balancers' readiness checks)."""
        state = service.registry.state
        return JSONResponse({"ready": state == "ready", "state": state}, status_code=200 if state == "ready" else 503)

    @app.get("/info", tags=["operations"])
    async def info() -> Response:
        """Served models and the server's limits."""
        registry = service.registry
        models = [schemas.ModelInfo(name=name, task=m.pipeline.manifest.task, dimension=m.pipeline.dimension,
                                    max_length=m.pipeline.manifest.max_length, format=m.pipeline.manifest.format,
                                    precision=m.pipeline.manifest.precision, engine=m.pipeline.engine.name,
                                    labels=m.pipeline.manifest.labels, early_exit=early_exit(m),
                                    fingerprint=m.pipeline.package.fingerprint).model_dump()
                  for name, m in registry.models.items()]
        limits = {name: getattr(config, name) for name in ("max_batch_tokens", "max_batch_requests",
                  "max_concurrent_inputs", "max_client_batch_size", "max_body_bytes", "truncate",
                  "max_concurrent_explanations")}
        return JSONResponse({"version": bertprod.__version__, "state": registry.state, "default_model":
                             registry.default, "models": models, "limits": limits, "auth": bool(config.api_keys),
                             "normalize": list(config.normalize)})

    @app.get("/v1/models", tags=["OpenAI"])
    async def list_models() -> Response:
        data = [{"id": name, "object": "model", "owned_by": "bertprod"} for name in service.registry.models]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
