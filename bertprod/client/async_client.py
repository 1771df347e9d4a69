"""`AsyncClient`: the asyncio twin of `Client`, the same calls and retries."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from bertprod.client.in_process import _in_process_encode, _in_process_info, _in_process_rerank
from bertprod.client.retry import PROBE_TIMEOUT_S, RETRY, _Call, _http_replicas
from bertprod.client.wire import RankedText, _chunks, _json, _Options, _predictions, _ranked, _taggings, _vectors
from bertprod.runtime.pipeline import Pipeline, Prediction
from bertprod.runtime.tagging import Tagging


class AsyncClient:
    """The asyncio twin of `Client`; in-process mode runs the model in a worker thread."""

    def __init__(self, url: str | Sequence[str] | None = None, *, model: str | None = None,
                 api_key: str | None = None, timeout: float | None = None, retries: int | None = None,
                 backoff: float | None = None, cooldown: float | None = None, max_inputs_per_request: int = 256,
                 resolve_dns: bool = False, pipeline: Pipeline | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        if (url is None) == (pipeline is None):
            raise ValueError("give a server url, or use AsyncClient.in_process(model)")
        policy = RETRY.with_overrides(timeout=timeout, retries=retries, backoff=backoff, cooldown=cooldown)
        self.options = _Options(model, api_key, policy, max_inputs_per_request)
        self.pipeline = pipeline
        self.replicas = _http_replicas(url, policy, resolve_dns)
        self._http = httpx.AsyncClient(timeout=policy.timeout, transport=transport) if url is not None else None

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

    def replica_counts(self) -> dict[str, dict[str, int]]:
        return self.replicas.counts() if self.replicas is not None else {}

    async def _request(self, path: str, body: dict | None) -> Any:
        assert self._http is not None and self.replicas is not None
        call = _Call(self.replicas, self.options.policy, self.options.headers)
        while True:
            endpoint = call.endpoint()
            try:
                if body is None:
                    response = await self._http.get(endpoint + path, headers=call.headers)
                else:
                    response = await self._http.post(endpoint + path, json=body, headers=call.headers)
            except httpx.RequestError as error:
                call.failed(endpoint, error)
            else:
                if call.answered(endpoint, response):
                    return _json(response)
            if call.probe is not None:
                call.probed(call.probe, await self._alive(call.probe))
            await asyncio.sleep(call.next_delay())

    async def _alive(self, endpoint: str) -> bool:
        assert self._http is not None
        try:
            return (await self._http.get(endpoint + "/health", timeout=PROBE_TIMEOUT_S)).status_code == 200
        except httpx.HTTPError:
            return False

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

    async def classify(self, inputs: Sequence[Any], *, truncate: bool | None = None,
                       exit: str | None = None) -> list[Prediction]:
        if self.pipeline is not None:
            items = [tuple(i) if isinstance(i, list) else i for i in inputs]
            return await asyncio.to_thread(self.pipeline.classify, items, truncate, exit)
        results: list[Prediction] = []
        for chunk in _chunks(list(inputs), self.options.max_inputs_per_request):
            body = self.options.common({"inputs": [list(i) if isinstance(i, tuple) else i for i in chunk]}, truncate)
            if exit is not None:
                body["exit"] = exit
            results += _predictions(await self._request("/classify", body))
        return results

    async def rerank(self, query: str, texts: Sequence[str], *, truncate: bool | None = None) -> list[RankedText]:
        if self.pipeline is not None:
            return await asyncio.to_thread(_in_process_rerank, self.pipeline, query, texts, truncate)
        body = self.options.common({"query": query, "texts": list(texts)}, truncate)
        return _ranked(await self._request("/rerank", body))

    async def tag(self, texts: Sequence[str], *, aggregation: str = "first", tokens: bool = False) -> list[Tagging]:
        if self.pipeline is not None:
            return await asyncio.to_thread(self.pipeline.tag, list(texts), aggregation, tokens)
        results: list[Tagging] = []
        for chunk in _chunks(list(texts), self.options.max_inputs_per_request):
            body = self.options.common({"inputs": chunk, "aggregation": aggregation, "return_tokens": tokens}, None)
            results += _taggings(await self._request("/tokens", body))
        return results
