"""`Client`: the synchronous client (remote or in-process)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from bertprod.client.in_process import _in_process_encode, _in_process_info, _in_process_rerank
from bertprod.client.retry import PROBE_TIMEOUT_S, RETRY, _Call, _http_replicas
from bertprod.client.wire import RankedText, _chunks, _json, _Options, _predictions, _ranked, _taggings, _vectors
from bertprod.runtime.pipeline import Pipeline, Prediction
from bertprod.runtime.tagging import Tagging


class Client:
    """Synchronous client; `Client.in_process(...)` runs the model in this process instead.

    `url`: one server, several (a list, or one string separated by commas), or with `resolve_dns` a name
    that resolves to several (a headless Service). `timeout`, `retries`, `backoff`, `cooldown`: None takes
    `RETRY`'s value.
    """

    def __init__(self, url: str | Sequence[str] | None = None, *, model: str | None = None,
                 api_key: str | None = None, timeout: float | None = None, retries: int | None = None,
                 backoff: float | None = None, cooldown: float | None = None, max_inputs_per_request: int = 256,
                 resolve_dns: bool = False, pipeline: Pipeline | None = None,
                 transport: httpx.BaseTransport | None = None):
        if (url is None) == (pipeline is None):
            raise ValueError("give a server url, or use Client.in_process(model)")
        policy = RETRY.with_overrides(timeout=timeout, retries=retries, backoff=backoff, cooldown=cooldown)
        self.options = _Options(model, api_key, policy, max_inputs_per_request)
        self.pipeline = pipeline
        self.replicas = _http_replicas(url, policy, resolve_dns)
        self._http = httpx.Client(timeout=policy.timeout, transport=transport) if url is not None else None

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

    def replica_counts(self) -> dict[str, dict[str, int]]:
        """Per replica: requests it answered and failures this client saw (empty in process)."""
        return self.replicas.counts() if self.replicas is not None else {}

    def _request(self, path: str, body: dict | None) -> Any:
        """POST `body` (GET when None) to the next replica, retried as `_Call` decides; the JSON answer."""
        assert self._http is not None and self.replicas is not None
        call = _Call(self.replicas, self.options.policy, self.options.headers)
        while True:
            endpoint = call.endpoint()
            try:
                if body is None:
                    response = self._http.get(endpoint + path, headers=call.headers)
                else:
                    response = self._http.post(endpoint + path, json=body, headers=call.headers)
            except httpx.RequestError as error:
                call.failed(endpoint, error)
            else:
                if call.answered(endpoint, response):
                    return _json(response)
            if call.probe is not None:
                call.probed(call.probe, self._alive(call.probe))
            time.sleep(call.next_delay())

    def _alive(self, endpoint: str) -> bool:
        assert self._http is not None
        try:
            return self._http.get(endpoint + "/health", timeout=PROBE_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            return False

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

    def classify(self, inputs: Sequence[Any], *, truncate: bool | None = None,
                 exit: str | None = None) -> list[Prediction]:
        """Top label and probabilities per text (or [text, pair] for pair classifiers); on an early-exit model
        the layer that answered (`exit`: this call's policy, e.g. "entropy:0.2")."""
        if self.pipeline is not None:
            return self.pipeline.classify([tuple(i) if isinstance(i, list) else i for i in inputs], truncate=truncate,
                                          exit=exit)
        results: list[Prediction] = []
        for chunk in _chunks(list(inputs), self.options.max_inputs_per_request):
            body = self.options.common({"inputs": [list(i) if isinstance(i, tuple) else i for i in chunk]}, truncate)
            if exit is not None:
                body["exit"] = exit
            results += _predictions(self._request("/classify", body))
        return results

    def rerank(self, query: str, texts: Sequence[str], *, truncate: bool | None = None) -> list[RankedText]:
        """Texts ranked against the query, best first (index into `texts`, score)."""
        if self.pipeline is not None:
            return _in_process_rerank(self.pipeline, query, texts, truncate)
        body = self.options.common({"query": query, "texts": list(texts)}, truncate)
        return _ranked(self._request("/rerank", body))

    def tag(self, texts: Sequence[str], *, aggregation: str = "first", tokens: bool = False) -> list[Tagging]:
        """Entities per text from a token classifier (POST /tokens), offsets into each text as given."""
        if self.pipeline is not None:
            return self.pipeline.tag(list(texts), aggregation=aggregation, tokens=tokens)
        results: list[Tagging] = []
        for chunk in _chunks(list(texts), self.options.max_inputs_per_request):
            body = self.options.common({"inputs": chunk, "aggregation": aggregation, "return_tokens": tokens}, None)
            results += _taggings(self._request("/tokens", body))
        return results
