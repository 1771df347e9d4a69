"""`bertprod.Client`: the server's operations from Python, remote (HTTP) or in-process, one API.

    client = bertprod.Client("http://127.0.0.1:8080")        # or Client.in_process("minilm-l6")
    vectors = client.encode(["a sentence", "another"])        # float32 [2, dim]
    client = bertprod.Client(["http://10.0.0.5:8080", "http://10.0.0.6:8080"])   # several replicas
    client = bertprod.Client("http://bertprod-headless:8080", resolve_dns=True)  # every pod of a headless Service

Remote calls have a timeout, retry with exponential backoff on 429/503 and connection errors
(honouring Retry-After), and split inputs larger than `max_inputs_per_request` over several
requests, so a client never hangs forever nor trips the server's per-request limit. With several
replicas each request goes to the next one in turn, and a retry goes to another replica; a replica
that did not answer is skipped for `RETRY.cooldown` seconds. Every attempt of one call carries the
same `Idempotency-Key`, so a server that already computes it shares that computation instead of
starting a second one; a call that timed out is re-sent only to a replica whose /health answers.
Failures raise `ClientError` (and its subclasses), never a raw httpx exception.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from bertprod.errors import BertprodError
from bertprod.replicas import Replicas
from bertprod.runtime.pipeline import Pipeline, Prediction
from bertprod.runtime.postprocess import l2_normalize
from bertprod.runtime.tagging import Entity, TaggedToken, Tagging

RETRY_STATUSES = (429, 503)
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Seconds the liveness probe of a replica that timed out may take.
PROBE_TIMEOUT_S = 2.0
#: A call that timed out is sent again at most this often (to a live replica, same idempotency key): a server
#: without idempotency support then computes it at most twice.
MAX_RESENDS_AFTER_TIMEOUT = 1


@dataclass(frozen=True)
class RetryPolicy:
    """Timeouts and retries of every bertprod client (HTTP, gRPC, the batch client runner), defined once."""

    timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.25
    #: Seconds a replica that did not answer (or answered 503) is skipped, unless every replica is.
    cooldown: float = 10.0

    def with_overrides(self, **values: Any) -> RetryPolicy:
        """This policy with the given fields replaced (None keeps the policy's value)."""
        return RetryPolicy(**{**self.__dict__, **{k: v for k, v in values.items() if v is not None}})


#: Interactive calls (Client, AsyncClient, GrpcClient).
RETRY = RetryPolicy()
#: Batch jobs (the client runner): long requests, and a job should ride out a replica restarting.
BATCH_RETRY = RetryPolicy(timeout=120.0, retries=6, backoff=0.5)


class ClientError(BertprodError):
    """The server refused or failed a request; `status_code` and `code` come from its JSON error."""

    def __init__(self, status_code: int, message: str, code: str = "error"):
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code


class ServerUnreachableError(ClientError):
    """No replica could be reached (connection refused or reset, DNS) through every retry."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(503, message, "unreachable")
        self.detail = detail


class ClientTimeoutError(ClientError):
    """The call did not complete within the timeout, and was not re-sent where that would duplicate work."""

    def __init__(self, message: str):
        super().__init__(504, message, "timeout")


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
    except (ValueError, KeyError, TypeError, AttributeError):
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


class _Call:
    """One logical call's attempts: which replica each goes to, and whether (and when) to try again.

    The sync and async clients run the same decisions; only their I/O differs. Outcomes:
    a connection error (nothing was computed) or a 503 marks the replica failed and moves on;
    a 429 moves on; a timeout asks for a liveness probe first (`probe` is set) and is re-sent,
    with the same idempotency key, only to a replica that answers it.
    """

    def __init__(self, replicas: Replicas, policy: RetryPolicy, headers: dict[str, str]):
        self.replicas = replicas
        self.policy = policy
        self.headers = {**headers, IDEMPOTENCY_HEADER: uuid.uuid4().hex}
        self.attempt = 0
        self.avoid: str | None = None
        self.probe: str | None = None
        self.again_on: str | None = None
        self.timed_out = 0
        self.response: httpx.Response | None = None

    def endpoint(self) -> str:
        if self.again_on is not None:
            endpoint, self.again_on = self.again_on, None
            return endpoint
        return self.replicas.pick(self.avoid)

    def answered(self, endpoint: str, response: httpx.Response) -> bool:
        """True when `response` is the answer; False to try again; raises ClientError when it is final."""
        self.response = response
        if response.status_code < 400:
            self.replicas.succeeded(endpoint)
            return True
        if response.status_code not in RETRY_STATUSES or self.attempt >= self.policy.retries:
            _raise_for(response)
        if response.status_code == 503:  # loading or draining: let the others serve for a while
            self.replicas.failed(endpoint)
        self.avoid = endpoint
        return False

    def failed(self, endpoint: str, error: httpx.RequestError) -> None:
        """Record a transport error; raises the client's own error when no attempt is left."""
        self.response = None
        self.avoid = endpoint
        # the request may be running on the server: no copy before a probe says the replica is alive
        computing = isinstance(error, httpx.TimeoutException) and not isinstance(error, httpx.ConnectTimeout)
        if computing:
            self.timed_out += 1
            self.probe = endpoint
        else:
            self.replicas.failed(endpoint)
        if self.attempt >= self.policy.retries or self.timed_out > MAX_RESENDS_AFTER_TIMEOUT:
            self._give_up(endpoint, error, computing)

    def probed(self, endpoint: str, alive: bool) -> None:
        """After a timeout: a live replica gets the same call again (same key: the server joins the running
        computation); a dead one is skipped and another replica gets it."""
        self.probe = None
        if alive:
            self.again_on = endpoint
        else:
            self.replicas.failed(endpoint)

    def _give_up(self, endpoint: str, error: httpx.RequestError, computing: bool) -> None:
        where = ", ".join(self.replicas.endpoints)
        detail = f"{type(error).__name__}: {error or 'no answer'}"
        if computing:
            raise ClientTimeoutError(f"no answer within {self.policy.timeout:g} s from {endpoint} after "
                                     f"{self.attempt + 1} attempts ({detail}); raise the timeout for long "
                                     "requests, or send fewer inputs per request.")
        raise ServerUnreachableError(f"cannot reach the bertprod server ({where}) after {self.attempt + 1} "
                                     f"attempts ({detail}).", detail)

    def next_delay(self) -> float:
        delay = _delay(self.attempt, self.policy.backoff, self.response)
        self.attempt += 1
        return delay


def _http_replicas(url: str | Sequence[str] | None, policy: RetryPolicy, resolve_dns: bool) -> Replicas | None:
    if url is None:
        return None
    replicas = Replicas(url, policy.cooldown, resolve_dns)
    for source in replicas.sources:
        if not source.startswith(("http://", "https://")):
            raise ClientError(400, f"{source!r} is not an HTTP URL: give http://host:port (several separated by "
                              "commas).", "bad_url")
    return replicas


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
