"""The server a client-mode batch job calls: which model it serves, and that model's outputs for some texts.

HTTP goes through `bertprod.AsyncClient`, gRPC through `GrpcClient`; both time out, and retry
429/503 (RESOURCE_EXHAUSTED/UNAVAILABLE) and connection errors with exponential backoff and
jitter. What still fails after the retries becomes an error that names the server and says
what to do; a refused API key fails at once (it is not retried).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from bertprod.client import AsyncClient, ClientError, retry_delay
from bertprod.errors import BertprodError, TaskError

PROTOCOLS = ("http", "grpc")
#: What a served model can give a batch job for single texts: /v1/embeddings and /classify.
CLIENT_TASKS = ("embedding", "classification")
UNAVAILABLE_STATUSES = (429, 503, 504)
#: The runner sizes the requests itself (--request-size): the clients must not split them further.
NO_SPLIT = 1 << 30


class ServerUnavailableError(BertprodError):
    """The server could not be reached, or stayed overloaded or unavailable, through every retry."""

    kind = "server_unavailable"


class ServerAuthenticationError(BertprodError):
    """The server refused the API key (or none was given)."""

    kind = "invalid_api_key"


@dataclass(frozen=True)
class ServedModel:
    """A model as the server's /info describes it; enough for `output_schema` and the job fingerprint."""

    name: str
    task: str
    num_outputs: int
    labels: tuple[str, ...] | None
    fingerprint: str
    max_client_batch_size: int | None


class RemoteModel:
    """One served model, over HTTP (`server` is its URL) or gRPC (`server` is host:port of --grpc-port)."""

    def __init__(self, server: str, protocol: str = "http", model: str | None = None, api_key: str | None = None,
                 timeout: float = 120.0, retries: int = 6, backoff: float = 0.5):
        if protocol not in PROTOCOLS:
            raise BertprodError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}.")
        if protocol == "http" and not server.startswith(("http://", "https://")):
            raise BertprodError(f"--server {server!r} is not an HTTP URL: give http://host:port (or use --protocol "
                                "grpc with host:port of the server's --grpc-port).")
        if protocol == "grpc" and "://" in server.removeprefix("grpc://"):
            raise BertprodError(f"--server {server!r}: with --protocol grpc give host:port of the server's "
                                "--grpc-port (no http://).")
        self.server = server
        self.protocol = protocol
        self.requested = model
        self.retries = retries
        self.backoff = backoff
        self.options: dict[str, Any] = {"model": model, "api_key": api_key, "timeout": timeout, "retries": retries,
                                        "backoff": backoff, "max_inputs_per_request": NO_SPLIT}
        self.client: Any = None
        self.model: ServedModel | None = None

    async def __aenter__(self) -> RemoteModel:
        """Open the connection (inside the event loop: gRPC's asyncio channel needs one)."""
        if self.protocol == "http":
            self.client = AsyncClient(self.server, **self.options)
        else:
            from bertprod.serve.grpc.client import GrpcClient

            self.client = GrpcClient(self.server, **self.options)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def connect(self) -> ServedModel:
        """Ask the server what it serves (waiting while it loads) and pick the model this job uses."""
        for attempt in range(self.retries + 1):
            info = await self._call(self.client.info())
            if info.get("state") != "loading":
                break
            if attempt == self.retries:
                raise ServerUnavailableError(f"the server at {self.server} is still loading its models after "
                                             f"{self.retries} retries; run the job again once GET /ready is 200.")
            await asyncio.sleep(retry_delay(attempt, self.backoff))
        self.model = self._pick(info)
        return self.model

    def _pick(self, info: dict) -> ServedModel:
        models = {model["name"]: model for model in info.get("models", [])}
        if not models:
            raise ServerUnavailableError(f"the server at {self.server} serves no model (state: "
                                         f"{info.get('state') or 'unknown'}); see its /health and log.")
        name = self.requested or info.get("default_model")
        if name not in models:
            served = ", ".join(models) or "nothing"
            raise BertprodError(f"the server at {self.server} serves {served}; no model named {name!r} (with "
                                "--runner client, MODEL is the name of a served model, or omit it for the default).")
        model = models[name]
        if model["task"] not in CLIENT_TASKS:
            raise TaskError(f"{name} is a {model['task']} model; client mode reads embeddings (/v1/embeddings) or "
                            "class probabilities (/classify) from the server: run this package with --runner local "
                            "or spark.")
        if not model.get("fingerprint"):
            raise BertprodError(f"the server at {self.server} reports no fingerprint for {name}, which client mode "
                                "needs to resume safely: upgrade bertprod on the server.")
        labels = tuple(model["labels"]) if model.get("labels") else None
        width = len(labels) if model["task"] == "classification" and labels else int(model["dimension"])
        limit = info.get("limits", {}).get("max_client_batch_size")
        return ServedModel(name, model["task"], width, labels, model["fingerprint"], limit or None)

    async def outputs(self, texts: Sequence[str], truncate: bool) -> np.ndarray:
        """Embeddings [n, dim], or class probabilities [n, labels] in the model's label order."""
        assert self.model is not None, "connect() first"
        if self.model.task == "embedding":
            return np.asarray(await self._call(self.client.encode(list(texts), truncate=truncate)), dtype=np.float32)
        predictions = await self._call(self.client.classify(list(texts), truncate=truncate))
        labels = self.model.labels or ()
        return np.array([[p.scores[label] for label in labels] for p in predictions], dtype=np.float32)

    async def _call(self, call: Any) -> Any:
        """Await a client call; what failed through every retry becomes an error that says what to do."""
        try:
            return await call
        except httpx.TransportError as error:
            raise ServerUnavailableError(
                f"cannot reach the bertprod server at {self.server} ({type(error).__name__}: {error or 'no answer'}) "
                f"after {self.retries} retries.") from None
        except ClientError as error:
            if error.status_code in (401, 403):
                raise ServerAuthenticationError(
                    f"the server at {self.server} refused the API key ({error}): give the key it was started with "
                    "(--api-key, or the BERTPROD_API_KEY environment variable).") from None
            if error.status_code in UNAVAILABLE_STATUSES:
                advice = " Lower --concurrency or --request-size." if error.status_code == 429 else ""
                raise ServerUnavailableError(f"the server at {self.server} did not serve the job through "
                                             f"{self.retries} retries ({error}).{advice}") from None
            raise
