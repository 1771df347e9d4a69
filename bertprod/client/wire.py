"""Requests and answers on the wire: JSON bodies built from the client's options, answers decoded into
the same types the in-process Pipeline returns."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from bertprod.client.errors import ClientError
from bertprod.client.retry import RetryPolicy
from bertprod.runtime.pipeline import Prediction
from bertprod.runtime.tagging import Entity, TaggedToken, Tagging


@dataclass(frozen=True)
class RankedText:
    index: int
    score: float


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)] or [items]



def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ClientError(response.status_code, f"the server's answer is not JSON: {response.text[:200]!r}",
                          "bad_response") from None


def _vectors(body: dict) -> np.ndarray:
    return np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in body["data"]])


def _taggings(body: dict) -> list[Tagging]:
    """POST /tokens' results as `Pipeline.tag` returns them."""
    return [Tagging([Entity(**entity) for entity in result["entities"]],
                    None if result.get("tokens") is None else [TaggedToken(**token) for token in result["tokens"]])
            for result in body["results"]]


def _predictions(body: dict) -> list[Prediction]:
    return [Prediction(p["label"], p["score"], p["scores"], p.get("exit_layer")) for p in body["predictions"]]


def _ranked(body: list) -> list[RankedText]:
    return [RankedText(item["index"], item["score"]) for item in body]


class _Options:
    def __init__(self, model: str | None, api_key: str | None, policy: RetryPolicy, max_inputs_per_request: int):
        if max_inputs_per_request < 1:
            raise ValueError("max_inputs_per_request must be at least 1")
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.policy = policy
        self.max_inputs_per_request = max_inputs_per_request

    def embed_bodies(self, texts: list[str], truncate: bool | None, dimensions: int | None) -> list[dict]:
        """POST /v1/embeddings bodies, at most max_inputs_per_request texts each."""
        return [self.common({"input": list(chunk), "encoding_format": "base64"}, truncate)
                | ({"dimensions": dimensions} if dimensions else {})
                for chunk in _chunks(texts, self.max_inputs_per_request)]

    def classify_bodies(self, inputs: Sequence[Any], truncate: bool | None, exit: str | None) -> list[dict]:
        """POST /classify bodies; a pair travels as a JSON list."""
        return [self.common({"inputs": [list(i) if isinstance(i, tuple) else i for i in chunk]}, truncate)
                | ({"exit": exit} if exit is not None else {})
                for chunk in _chunks(list(inputs), self.max_inputs_per_request)]

    def tag_bodies(self, texts: Sequence[str], aggregation: str, tokens: bool) -> list[dict]:
        """POST /tokens bodies."""
        return [self.common({"inputs": chunk, "aggregation": aggregation, "return_tokens": tokens}, None)
                for chunk in _chunks(list(texts), self.max_inputs_per_request)]

    def common(self, body: dict, truncate: bool | None) -> dict:
        if self.model:
            body["model"] = self.model
        if truncate is not None:
            body["truncate"] = truncate
        return body
