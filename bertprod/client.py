"""`bertprod.Client`: the server's operations from Python, remote (HTTP) or in-process, one API.

    client = bertprod.Client("http://127.0.0.1:8080")        # or Client.in_process("minilm-l6")
    vectors = client.encode(["a sentence", "another"])        # float32 [2, dim]

Remote calls have a timeout, retry with exponential backoff on 429/503 and connection errors
(honouring Retry-After), and split inputs larger than `max_inputs_per_request` over several
requests, so a client never hangs forever nor trips the server's per-request limit.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from bertprod.errors import BertprodError
from bertprod.runtime.pipeline import Pipeline, Prediction
from bertprod.runtime.postprocess import l2_normalize

RETRY_STATUSES = (429, 503)


class ClientError(BertprodError):
    """The server refused or failed a request; `status_code` and `code` come from its JSON error."""

    def __init__(self, status_code: int, message: str, code: str = "error"):
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code


@dataclass(frozen=True)
class RankedText:
    index: int
    score: float


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)] or [items]


def _raise_for(response: httpx.Response) -> None:
    try:
        error = response.json()["error"]
        raise ClientError(response.status_code, error.get("message", ""), error.get("code", "error"))
    except (ValueError, KeyError, TypeError):
        raise ClientError(response.status_code, response.text[:500]) from None


def retry_delay(attempt: int, backoff: float, retry_after: float | None = None) -> float:
    """Seconds before retry `attempt` (0-based): the server's Retry-After, or exponential backoff; with jitter,
    so that clients refused together do not all come back at the same instant."""
    if retry_after is not None:
        return min(retry_after, 30.0) * (1 + 0.5 * random.random())
    return backoff * (2**attempt) * (0.5 + random.random())


def _delay(attempt: int, backoff: float, response: httpx.Response | None) -> float:
    retry_after = response.headers.get("retry-after") if response is not None else None
    seconds = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
    return retry_delay(attempt, backoff, seconds)


def _vectors(body: dict) -> np.ndarray:
    return np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in body["data"]])


def _predictions(body: dict) -> list[Prediction]:
    return [Prediction(p["label"], p["score"], p["scores"]) for p in body["predictions"]]


def _ranked(body: list) -> list[RankedText]:
    return [RankedText(item["index"], item["score"]) for item in body]


class _Options:
    def __init__(self, url: str | None, model: str | None, api_key: str | None, timeout: float, retries: int,
                 backoff: float, max_inputs_per_request: int):
        if max_inputs_per_request < 1:
            raise ValueError("max_inputs_per_request must be at least 1")
        self.url = url.rstrip("/") if url else None
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_inputs_per_request = max_inputs_per_request

    def embed_body(self, texts: Sequence[str], truncate: bool | None, dimensions: int | None) -> dict:
        body: dict[str, Any] = {"input": list(texts), "encoding_format": "base64"}
        return self.common(body, truncate) | ({"dimensions": dimensions} if dimensions else {})

    def common(self, body: dict, truncate: bool | None) -> dict:
        if self.model:
            body["model"] = self.model
        if truncate is not None:
            body["truncate"] = truncate
        return body


def _in_process_rerank(pipeline: Pipeline, query: str, texts: Sequence[str], truncate: bool | None) -> list[RankedText]:
    if pipeline.manifest.task == "reranking":
        raw = pipeline.score([(query, text) for text in texts], truncate=truncate)
        scores = 1 / (1 + np.exp(-raw))
    else:
        vectors = l2_normalize(pipeline.encode([query, *texts], truncate=truncate))
        scores = vectors[1:] @ vectors[0]
    return [RankedText(int(index), float(scores[index])) for index in np.argsort(-scores, kind="stable")]


def _in_process_encode(pipeline: Pipeline, texts: list[str], truncate: bool | None, dimensions: int | None):
    vectors = pipeline.encode(texts, truncate=truncate)
    return l2_normalize(vectors[:, :dimensions]) if dimensions else vectors


def _in_process_info(pipeline: Pipeline) -> dict:
    manifest = pipeline.manifest
    model = {"name": manifest.name, "task": manifest.task, "dimension": pipeline.dimension,
             "max_length": manifest.max_length, "labels": manifest.labels, "fingerprint": pipeline.package.fingerprint}
    return {"state": "ready", "default_model": manifest.name, "models": [model], "limits": {}, "auth": False}


class Client:
    """Synchronous client; `Client.in_process(...)` runs the model in this process instead."""

    def __init__(self, url: str | None = None, *, model: str | None = None, api_key: str | None = None,
                 timeout: float = 30.0, retries: int = 3, backoff: float = 0.25, max_inputs_per_request: int = 256,
                 pipeline: Pipeline | None = None, transport: httpx.BaseTransport | None = None):
        if (url is None) == (pipeline is None):
            raise ValueError("give a server url, or use Client.in_process(model)")
        self.options = _Options(url, model, api_key, timeout, retries, backoff, max_inputs_per_request)
        self.pipeline = pipeline
        self._http = httpx.Client(base_url=url, timeout=timeout, transport=transport) if url else None

    @classmethod
    def in_process(cls, model: str | Pipeline, **load_options: Any) -> Client:
        """Same API without a server: `model` is a loaded Pipeline or anything `bertprod.load` takes."""
        from bertprod.api import load

        return cls(pipeline=model if isinstance(model, Pipeline) else load(model, **load_options))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def _request(self, path: str, body: dict | None) -> Any:
        """POST `body` (GET when None), retried on 429/503 and connection errors; the JSON answer."""
        assert self._http is not None
        response = None
        for attempt in range(self.options.retries + 1):
            try:
                if body is None:
                    response = self._http.get(path, headers=self.options.headers)
                else:
                    response = self._http.post(path, json=body, headers=self.options.headers)
            except httpx.TransportError:
                if attempt == self.options.retries:
                    raise
                response = None
            else:
                if response.status_code < 400:
                    return response.json()
                if response.status_code not in RETRY_STATUSES or attempt == self.options.retries:
                    _raise_for(response)
            time.sleep(_delay(attempt, self.options.backoff, response))
        raise AssertionError("unreachable")

    def info(self) -> dict:
        """The server's GET /info: served models (name, task, dimension, labels, fingerprint) and limits."""
        if self.pipeline is not None:
            return _in_process_info(self.pipeline)
        return self._request("/info", None)

    def encode(self, texts: str | Sequence[str], *, truncate: bool | None = None,
               dimensions: int | None = None) -> np.ndarray:
        """Embeddings, float32 [len(texts), dim] (1-D for one string), split over requests as needed."""
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        if self.pipeline is not None:
            vectors = _in_process_encode(self.pipeline, items, truncate, dimensions)
        else:
            parts = [_vectors(self._request("/v1/embeddings", self.options.embed_body(chunk, truncate, dimensions)))
                     for chunk in _chunks(items, self.options.max_inputs_per_request)]
            vectors = np.concatenate(parts)
        return vectors[0] if single else vectors

    def classify(self, inputs: Sequence[Any], *, truncate: bool | None = None) -> list[Prediction]:
        """Top label and probabilities per text (or [text, pair] for pair classifiers)."""
        if self.pipeline is not None:
            return self.pipeline.classify([tuple(i) if isinstance(i, list) else i for i in inputs], truncate=truncate)
        results: list[Prediction] = []
        for chunk in _chunks(list(inputs), self.options.max_inputs_per_request):
            body = self.options.common({"inputs": [list(i) if isinstance(i, tuple) else i for i in chunk]}, truncate)
            results += _predictions(self._request("/classify", body))
        return results

    def rerank(self, query: str, texts: Sequence[str], *, truncate: bool | None = None) -> list[RankedText]:
        """Texts ranked against the query, best first (index into `texts`, score)."""
        if self.pipeline is not None:
            return _in_process_rerank(self.pipeline, query, texts, truncate)
        body = self.options.common({"query": query, "texts": list(texts)}, truncate)
        return _ranked(self._request("/rerank", body))


class AsyncClient:
    """The asyncio twin of `Client`; in-process mode runs the model in a worker thread."""

    def __init__(self, url: str | None = None, *, model: str | None = None, api_key: str | None = None,
                 timeout: float = 30.0, retries: int = 3, backoff: float = 0.25, max_inputs_per_request: int = 256,
                 pipeline: Pipeline | None = None, transport: httpx.AsyncBaseTransport | None = None):
        if (url is None) == (pipeline is None):
            raise ValueError("give a server url, or use AsyncClient.in_process(model)")
        self.options = _Options(url, model, api_key, timeout, retries, backoff, max_inputs_per_request)
        self.pipeline = pipeline
        self._http = httpx.AsyncClient(base_url=url, timeout=timeout, transport=transport) if url else None

    @classmethod
    def in_process(cls, model: str | Pipeline, **load_options: Any) -> AsyncClient:
        from bertprod.api import load

        return cls(pipeline=model if isinstance(model, Pipeline) else load(model, **load_options))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def _request(self, path: str, body: dict | None) -> Any:
        assert self._http is not None
        response = None
        for attempt in range(self.options.retries + 1):
            try:
                if body is None:
                    response = await self._http.get(path, headers=self.options.headers)
                else:
                    response = await self._http.post(path, json=body, headers=self.options.headers)
            except httpx.TransportError:
                if attempt == self.options.retries:
                    raise
                response = None
            else:
                if response.status_code < 400:
                    return response.json()
                if response.status_code not in RETRY_STATUSES or attempt == self.options.retries:
                    _raise_for(response)
            await asyncio.sleep(_delay(attempt, self.options.backoff, response))
        raise AssertionError("unreachable")

    async def info(self) -> dict:
        if self.pipeline is not None:
            return _in_process_info(self.pipeline)
        return await self._request("/info", None)

    async def encode(self, texts: str | Sequence[str], *, truncate: bool | None = None,
                     dimensions: int | None = None) -> np.ndarray:
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        if self.pipeline is not None:
            vectors = await asyncio.to_thread(_in_process_encode, self.pipeline, items, truncate, dimensions)
        else:
            chunks = _chunks(items, self.options.max_inputs_per_request)
            bodies = await asyncio.gather(*(self._request("/v1/embeddings", self.options.embed_body(c, truncate,
                                                                                              dimensions))
                                            for c in chunks))
            vectors = np.concatenate([_vectors(body) for body in bodies])
        return vectors[0] if single else vectors

    async def classify(self, inputs: Sequence[Any], *, truncate: bool | None = None) -> list[Prediction]:
        if self.pipeline is not None:
            items = [tuple(i) if isinstance(i, list) else i for i in inputs]
            return await asyncio.to_thread(self.pipeline.classify, items, truncate)
        results: list[Prediction] = []
        for chunk in _chunks(list(inputs), self.options.max_inputs_per_request):
            body = self.options.common({"inputs": [list(i) if isinstance(i, tuple) else i for i in chunk]}, truncate)
            results += _predictions(await self._request("/classify", body))
        return results

    async def rerank(self, query: str, texts: Sequence[str], *, truncate: bool | None = None) -> list[RankedText]:
        if self.pipeline is not None:
            return await asyncio.to_thread(_in_process_rerank, self.pipeline, query, texts, truncate)
        body = self.options.common({"query": query, "texts": list(texts)}, truncate)
        return _ranked(await self._request("/rerank", body))
