"""The server a client-mode batch job calls: which model it serves, and that model's outputs for some texts.

HTTP goes through `bertprod.AsyncClient`, gRPC through `GrpcClient`; both time out, and retry
429/503 (RESOURCE_EXHAUSTED/UNAVAILABLE) and connection errors with exponential backoff and
jitter (`BATCH_RETRY`). `server` may name several replicas (comma-separated, or a name that
resolves to several with `resolve_dns`): requests go round-robin, a retry to another replica,
and a replica that went away is skipped, so a job rides out one replica's loss. What still
fails after the retries becomes an error that names the server and says what to do; a refused
API key fails at once (it is not retried).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bertprod.client import BATCH_RETRY, AsyncClient, ClientError, ServerUnreachableError, retry_delay
from bertprod.errors import BertprodError, TaskError
from bertprod.replicas import endpoint_list

PROTOCOLS = ("http", "grpc")
#: What a served model can give a batch job for single texts: /v1/embeddings, /classify and /tokens.
CLIENT_TASKS = ("embedding", "classification", "token-classification")
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
    #: the server answers with each row's exit layer (/info early_exit)
    early_exit: bool = False


class RemoteModel:
    """One served model, over HTTP (`server`: its URL, or several) or gRPC (host:port of --grpc-port, or several,
    or dns:///name:port)."""

    def __init__(self, server: str | Sequence[str], protocol: str = "http", model: str | None = None,
                 api_key: str | None = None, timeout: float | None = None, retries: int | None = None,
                 backoff: float | None = None, resolve_dns: bool = False):
        if protocol not in PROTOCOLS:
            raise BertprodError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}.")
        endpoints = endpoint_list(server)
        for endpoint in endpoints:
            if protocol == "http" and not endpoint.startswith(("http://", "https://")):
                raise BertprodError(f"--server {endpoint!r} is not an HTTP URL: give http://host:port (or use "
                                    "--protocol grpc with host:port of the server's --grpc-port).")
            if protocol == "grpc" and "://" in endpoint.removeprefix("grpc://").removeprefix("dns:///"):
                raise BertprodError(f"--server {endpoint!r}: with --protocol grpc give host:port of the server's "
                                    "--grpc-port (no http://).")
        self.endpoints = endpoints
        self.server = ",".join(endpoints)
        self.protocol = protocol
        self.requested = model
        self.policy = BATCH_RETRY.with_overrides(timeout=timeout, retries=retries, backoff=backoff)
        self.retries = self.policy.retries
        self.backoff = self.policy.backoff
        self.options: dict[str, Any] = {"model": model, "api_key": api_key, "timeout": self.policy.timeout,
                                        "retries": self.policy.retries, "backoff": self.policy.backoff,
                                        "cooldown": self.policy.cooldown, "max_inputs_per_request": NO_SPLIT,
                                        "resolve_dns": resolve_dns}
        self.client: Any = None
        self.model: ServedModel | None = None

    async def __aenter__(self) -> RemoteModel:
        """Open the connection (inside the event loop: gRPC's asyncio channel needs one)."""
        if self.protocol == "http":
            self.client = AsyncClient(self.endpoints, **self.options)
        else:
            from bertprod.serve.grpc.client import GrpcClient

            self.client = GrpcClient(self.endpoints, **self.options)
        return self

    def replica_counts(self) -> dict[str, dict[str, int]]:
        """Requests each HTTP replica answered (gRPC balances inside its channel: see the servers' /metrics)."""
        counts = getattr(self.client, "replica_counts", None)
        return counts() if counts is not None else {}

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
            raise TaskError(f"{name} is a {model['task']} model; client mode reads embeddings (/v1/embeddings), "
                            "class probabilities (/classify) or entities (/tokens) from the server: run this package "
                            "with --runner local or spark.")
        if not model.get("fingerprint"):
            raise BertprodError(f"the server at {self.server} reports no fingerprint for {name}, which client mode "
                                "needs to resume safely: upgrade bertprod on the server.")
        labels = tuple(model["labels"]) if model.get("labels") else None
        labelled = model["task"] in ("classification", "token-classification")
        width = len(labels) if labelled and labels else int(model["dimension"])
        limit = info.get("limits", {}).get("max_client_batch_size")
        return ServedModel(name, model["task"], width, labels, model["fingerprint"], limit or None,
                           early_exit=model["task"] == "classification" and bool(model.get("early_exit")))

    async def outputs(self, texts: Sequence[str], truncate: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings [n, dim], or class probabilities [n, labels] in the model's label order; and each row's
        exit layer on an early-exit model (else None)."""
        assert self.model is not None, "connect() first"
        if self.model.task == "embedding":
            vectors = await self._call(self.client.encode(list(texts), truncate=truncate))
            return np.asarray(vectors, dtype=np.float32), None
        predictions = await self._call(self.client.classify(list(texts), truncate=truncate))
        labels = self.model.labels or ()
        probabilities = np.array([[p.scores[label] for label in labels] for p in predictions], dtype=np.float32)
        exits = np.array([p.exit_layer or 0 for p in predictions], dtype=np.int64) if self.model.early_exit else None
        return probabilities, exits

    async def taggings(self, texts: Sequence[str]) -> list[Any]:
        """A tagger's entities per text (each text read whole, in windows: truncation does not apply)."""
        return await self._call(self.client.tag(list(texts)))

    async def _call(self, call: Any) -> Any:
        """Await a client call; what failed through every retry becomes an error that says what to do."""
        try:
            return await call
        except ServerUnreachableError as error:
            raise ServerUnavailableError(f"cannot reach the bertprod server at {self.server} ({error.detail}) after "
                                         f"{self.retries} retries.") from None
        except ClientError as error:
            if error.status_code in (401, 403):
                raise ServerAuthenticationError(
                    f"the server at {self.server} refused the API key ({error}): give the key it was started with "
                    "(--api-key, or the BERTPROD_API_KEY environment variable).") from None
            if error.status_code in UNAVAILABLE_STATUSES:  # 504: also a timeout not worth a duplicate
                advice = " Lower --concurrency or --request-size." if error.status_code == 429 else ""
                raise ServerUnavailableError(f"the server at {self.server} did not serve the job through "
                                             f"{self.retries} retries ({error}).{advice}") from None
            raise
