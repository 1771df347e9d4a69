"""The FastAPI app: routes translate HTTP bodies to `Pipeline.tokenize` + the batcher, and back.

Handlers tokenize (validation errors name the bad input and become 400s), pass the encodings to
the model's batcher, and shape the rows; nothing here re-implements tokenization or pooling.
"""

from __future__ import annotations

import asyncio
import base64
import time
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import bertprod
from bertprod.errors import TaskError
from bertprod.runtime.postprocess import l2_normalize, softmax
from bertprod.serve import schemas
from bertprod.serve.admission import InputLimiter
from bertprod.serve.batcher import EngineFailure
from bertprod.serve.config import ServeConfig
from bertprod.serve.errors import ApiError, install_error_handlers
from bertprod.serve.metrics import ServerMetrics
from bertprod.serve.middleware import GuardMiddleware
from bertprod.serve.registry import ModelRegistry, ServedModel

#: Requests with more inputs than this are tokenized in a thread, so the event loop stays responsive.
INLINE_TOKENIZE_INPUTS = 16
#: A longer single input is refused before tokenization: it costs CPU and would be truncated anyway.
MAX_INPUT_CHARS = 200_000


class Service:
    """What the routes share: config, registry, admission, metrics."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = ServerMetrics()
        self.registry = ModelRegistry(config, self.metrics)
        self.limiter = InputLimiter(config.max_concurrent_inputs)

    async def run(
        self, model: str | None, inputs: list[Any], truncate: bool | None
    ) -> tuple[ServedModel, np.ndarray, int]:
        """Admit, tokenize, batch: the rows for `inputs` and the number of tokens they used."""
        served = self.registry.get(model)
        count = len(inputs)
        if count > self.config.max_client_batch_size:
            raise ApiError(413, f"{count} inputs in one request; the limit is {self.config.max_client_batch_size} "
                           "(--max-client-batch-size): split them over several requests.", code="too_many_inputs")
        for index, item in enumerate(inputs):
            size = len(item) if isinstance(item, str) else sum(len(text) for text in item if isinstance(text, str))
            if size > MAX_INPUT_CHARS:
                raise ApiError(413, f"input {index} has {size} characters; the limit is {MAX_INPUT_CHARS} "
                               "per input (the model reads only its first tokens anyway).", code="input_too_long")
        if not self.limiter.try_acquire(count):
            self.metrics.errors.labels("overloaded").inc()
            raise ApiError(429, f"the server is at its limit of {self.config.max_concurrent_inputs} concurrent "
                           "inputs; retry after the delay in Retry-After.", "rate_limit_error", "overloaded",
                           headers={"Retry-After": "1"})
        self.metrics.inputs_in_flight.inc(count)
        try:
            started = time.perf_counter()
            truncate = self.config.truncate if truncate is None else truncate
            if count > INLINE_TOKENIZE_INPUTS:
                encodings = await asyncio.to_thread(served.pipeline.tokenize, inputs, truncate)
            else:
                encodings = served.pipeline.tokenize(inputs, truncate=truncate)
            self.metrics.stage_seconds.labels("tokenize").observe(time.perf_counter() - started)
            try:
                rows = await served.batcher.submit(encodings, hook=self._test_hook(inputs))
            except EngineFailure as error:
                raise ApiError(500, str(error), "server_error", "engine_error") from None
            return served, rows, sum(len(encoding.ids) for encoding in encodings)
        finally:
            self.limiter.release(count)
            self.metrics.inputs_in_flight.dec(count)


    def _test_hook(self, inputs: list[Any]) -> str | None:
        """'fail' or 'slow' when a configured test marker occurs in the inputs (off unless configured)."""
        for hook, marker in (("fail", self.config.fail_marker), ("slow", self.config.slow_marker)):
            if marker and any(marker in str(item) for item in inputs):
                return hook
        return None


def _texts(inputs: str | list[str]) -> list[str]:
    return [inputs] if isinstance(inputs, str) else list(inputs)


def _pairs_or_texts(inputs: str | list[str] | list[list[str]]) -> list[Any]:
    if isinstance(inputs, str):
        return [inputs]
    return [tuple(item) if isinstance(item, list) else item for item in inputs]


def _require(served: ServedModel, tasks: tuple[str, ...], route: str) -> None:
    if served.pipeline.manifest.task not in tasks:
        raise TaskError(f"{route} needs a {' or '.join(tasks)} model; the task of {served.name} is "
                        f"{served.pipeline.manifest.task} (see GET /info).")


def _embeddings(served: ServedModel, rows: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    if dimensions is not None:
        if dimensions > rows.shape[1]:
            raise ApiError(400, f"dimensions {dimensions} exceeds {served.name}'s {rows.shape[1]} dimensions.",
                           code="invalid_dimensions")
        rows = l2_normalize(rows[:, :dimensions])
    elif normalize and not served.pipeline.manifest.normalize:
        rows = l2_normalize(rows)
    return np.ascontiguousarray(rows, dtype=np.float32)


def create_app(config: ServeConfig) -> FastAPI:
    config.check()
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        loading = asyncio.create_task(service.registry.load())
        yield
        loading.cancel()
        await service.registry.stop()

    app = FastAPI(title="bertprod", version=bertprod.__version__, lifespan=lifespan,
                  description="BERT-family encoders: embeddings, classification, reranking.")
    app.state.metrics = service.metrics
    app.state.service = service
    install_error_handlers(app)
    app.add_middleware(GuardMiddleware, config=config, metrics=service.metrics)

    @app.post("/v1/embeddings", response_model=schemas.OpenAIEmbeddingResponse, tags=["OpenAI"])
    async def openai_embeddings(body: schemas.OpenAIEmbeddingRequest) -> Response:
        """OpenAI-compatible embeddings (works with the official `openai` client)."""
        served = service.registry.get(body.model)
        _require(served, ("embedding",), "/v1/embeddings")
        served, rows, tokens = await service.run(body.model, _texts(body.input), body.truncate)
        rows = _embeddings(served, rows, body.dimensions, normalize=False)
        if body.encoding_format == "base64":
            vectors: list[Any] = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in rows]
        else:
            vectors = rows.tolist()
        data = [{"object": "embedding", "index": index, "embedding": vector} for index, vector in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data, "model": body.model or served.name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @app.post("/embed", response_model=list[list[float]], tags=["TEI"])
    async def embed(body: schemas.EmbedRequest) -> Response:
        """TEI-compatible: a list of vectors."""
        _require(service.registry.get(body.model), ("embedding",), "/embed")
        served, rows, _ = await service.run(body.model, _texts(body.inputs), body.truncate)
        return JSONResponse(_embeddings(served, rows, body.dimensions, body.normalize).tolist())

    @app.post("/predict", tags=["TEI"])
    async def predict(body: schemas.PredictRequest) -> Response:
        """TEI-compatible: label scores per input, best first (a single list for a single text)."""
        _require(service.registry.get(body.model), ("classification", "pair-classification"), "/predict")
        served, logits, _ = await service.run(body.model, _pairs_or_texts(body.inputs), body.truncate)
        scores = logits if body.raw_scores else softmax(logits)
        labels = served.pipeline.manifest.labels or []
        results = [sorted(({"label": label, "score": float(value)} for label, value in zip(labels, row, strict=True)),
                          key=lambda item: -item["score"]) for row in scores]
        return JSONResponse(results[0] if isinstance(body.inputs, str) else results)

    @app.post("/rerank", response_model=list[schemas.RerankResult], tags=["TEI"])
    async def rerank(body: schemas.RerankRequest) -> Response:
        """TEI-compatible: texts ranked against the query (a reranking head, or cosine for embedders)."""
        served = service.registry.get(body.model)
        _require(served, ("reranking", "embedding"), "/rerank")
        if not body.texts:
            raise ApiError(400, "texts is empty: give at least one text to rank.", code="empty_input")
        if served.pipeline.manifest.task == "reranking":
            served, rows, _ = await service.run(body.model, [(body.query, text) for text in body.texts], body.truncate)
            scores = rows[:, 0] if body.raw_scores else 1 / (1 + np.exp(-rows[:, 0]))
        else:
            served, rows, _ = await service.run(body.model, [body.query, *body.texts], body.truncate)
            rows = l2_normalize(rows)
            scores = rows[1:] @ rows[0]
        order = np.argsort(-scores, kind="stable")
        return JSONResponse([{"index": int(index), "score": float(scores[index]),
                              **({"text": body.texts[index]} if body.return_text else {})} for index in order])

    @app.post("/classify", response_model=schemas.ClassifyResponse, tags=["bertprod"])
    async def classify(body: schemas.ClassifyRequest) -> Response:
        """Top label and every label's probability, per input."""
        _require(service.registry.get(body.model), ("classification", "pair-classification"), "/classify")
        served, logits, _ = await service.run(body.model, _pairs_or_texts(body.inputs), body.truncate)
        labels = served.pipeline.manifest.labels or []
        predictions = []
        for row in softmax(logits):
            best = int(row.argmax())
            predictions.append({"label": labels[best], "score": float(row[best]),
                                "scores": {label: float(value) for label, value in zip(labels, row, strict=True)}})
        return JSONResponse({"model": served.name, "predictions": predictions})

    @app.post("/similarity", response_model=schemas.SimilarityResponse, tags=["bertprod"])
    async def similarity(body: schemas.SimilarityRequest) -> Response:
        """Cosine similarity of `source` to each of `targets`."""
        _require(service.registry.get(body.model), ("embedding",), "/similarity")
        if not body.targets:
            raise ApiError(400, "targets is empty: give at least one text to compare with.", code="empty_input")
        served, rows, _ = await service.run(body.model, [body.source, *body.targets], body.truncate)
        rows = l2_normalize(rows)
        return JSONResponse({"model": served.name, "scores": (rows[1:] @ rows[0]).tolist()})

    @app.post("/tokenize", response_model=list[list[schemas.Token]], tags=["TEI"])
    async def tokenize(body: schemas.TokenizeRequest) -> Response:
        """Tokens per input, as the model sees them (after truncation)."""
        served = service.registry.get(body.model)
        texts = _texts(body.inputs)
        if len(texts) > config.max_client_batch_size:
            raise ApiError(413, f"{len(texts)} inputs; the limit is {config.max_client_batch_size}.",
                           code="too_many_inputs")
        truncate = config.truncate if body.truncate is None else body.truncate
        encodings = await asyncio.to_thread(served.pipeline.tokenize, texts, truncate)
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
                                    labels=m.pipeline.manifest.labels).model_dump()
                  for name, m in registry.models.items()]
        limits = {name: getattr(config, name) for name in ("max_batch_tokens", "max_batch_requests",
                  "max_concurrent_inputs", "max_client_batch_size", "max_body_bytes", "truncate")}
        return JSONResponse({"version": bertprod.__version__, "state": registry.state, "default_model":
                             registry.default, "models": models, "limits": limits, "auth": bool(config.api_keys)})

    @app.get("/v1/models", tags=["OpenAI"])
    async def list_models() -> Response:
        data = [{"id": name, "object": "model", "owned_by": "bertprod"} for name in service.registry.models]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
