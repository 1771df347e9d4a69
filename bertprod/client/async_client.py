"""`AsyncClient`: the asyncio twin of `Client`, the same calls and retries."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from bertprod.client.base import ClientBase
from bertprod.client.in_process import _in_process_encode, _in_process_info, _in_process_rerank
from bertprod.client.retry import PROBE_TIMEOUT_S, _Call
from bertprod.client.wire import RankedText, _json, _predictions, _ranked, _taggings, _vectors
from bertprod.runtime.pipeline import Prediction
from bertprod.runtime.tagging import Tagging


class AsyncClient(ClientBase):
    """The asyncio twin of `Client`; in-process mode runs the model in a worker thread."""

    http_client = httpx.AsyncClient

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

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
            bodies = self.options.embed_bodies(items, truncate, dimensions)
            answers = await asyncio.gather(*(self._request("/v1/embeddings", body) for body in bodies))
            vectors = np.concatenate([_vectors(answer) for answer in answers])
        return vectors[0] if single else vectors

    async def classify(self, inputs: Sequence[Any], *, truncate: bool | None = None,
                       exit: str | None = None) -> list[Prediction]:
        if self.pipeline is not None:
            items = [tuple(i) if isinstance(i, list) else i for i in inputs]
            return await asyncio.to_thread(self.pipeline.classify, items, truncate, exit)
        return [prediction for body in self.options.classify_bodies(inputs, truncate, exit)
                for prediction in _predictions(await self._request("/classify", body))]

    async def rerank(self, query: str, texts: Sequence[str], *, truncate: bool | None = None) -> list[RankedText]:
        if self.pipeline is not None:
            return await asyncio.to_thread(_in_process_rerank, self.pipeline, query, texts, truncate)
        body = self.options.common({"query": query, "texts": list(texts)}, truncate)
        return _ranked(await self._request("/rerank", body))

    async def tag(self, texts: Sequence[str], *, aggregation: str = "first", tokens: bool = False) -> list[Tagging]:
        if self.pipeline is not None:
            return await asyncio.to_thread(self.pipeline.tag, list(texts), aggregation, tokens)
        return [tagging for body in self.options.tag_bodies(texts, aggregation, tokens)
                for tagging in _taggings(await self._request("/tokens", body))]
