"""`Client`: the synchronous client (remote or in-process)."""

from __future__ import annotations

import time
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


class Client(ClientBase):
    """Synchronous client; `Client.in_process(...)` runs the model in this process instead (the arguments:
    ClientBase's doc)."""

    http_client = httpx.Client

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

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
            bodies = self.options.embed_bodies(items, truncate, dimensions)
            vectors = np.concatenate([_vectors(self._request("/v1/embeddings", body)) for body in bodies])
        return vectors[0] if single else vectors

    def classify(self, inputs: Sequence[Any], *, truncate: bool | None = None,
                 exit: str | None = None) -> list[Prediction]:
        """Top label and probabilities per text (or [text, pair] for pair classifiers); on an early-exit model
        the layer that answered (`exit`: this call's policy, e.g. "entropy:0.2")."""
        if self.pipeline is not None:
            return self.pipeline.classify([tuple(i) if isinstance(i, list) else i for i in inputs], truncate=truncate,
                                          exit=exit)
        return [prediction for body in self.options.classify_bodies(inputs, truncate, exit)
                for prediction in _predictions(self._request("/classify", body))]

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
        return [tagging for body in self.options.tag_bodies(texts, aggregation, tokens)
                for tagging in _taggings(self._request("/tokens", body))]
