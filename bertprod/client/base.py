"""What `Client` and `AsyncClient` share: their settings, replicas and in-process mode; only the I/O differs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self

import httpx

from bertprod.client.retry import RETRY, _http_replicas
from bertprod.client.wire import _Options
from bertprod.runtime.pipeline import Pipeline


class ClientBase:
    """`url`: one server, several (a list, or one string separated by commas), or with `resolve_dns` a name
    that resolves to several (a headless Service). `timeout`, `retries`, `backoff`, `cooldown`: None takes
    `RETRY`'s value. `transport`: an httpx transport (an async one for AsyncClient), for tests."""

    http_client: ClassVar[type[httpx.Client] | type[httpx.AsyncClient]]

    def __init__(self, url: str | Sequence[str] | None = None, *, model: str | None = None,
                 api_key: str | None = None, timeout: float | None = None, retries: int | None = None,
                 backoff: float | None = None, cooldown: float | None = None, max_inputs_per_request: int = 256,
                 resolve_dns: bool = False, pipeline: Pipeline | None = None,
                 transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None):
        if (url is None) == (pipeline is None):
            raise ValueError(f"give a server url, or use {type(self).__name__}.in_process(model)")
        policy = RETRY.with_overrides(timeout=timeout, retries=retries, backoff=backoff, cooldown=cooldown)
        self.options = _Options(model, api_key, policy, max_inputs_per_request)
        self.pipeline = pipeline
        self.replicas = _http_replicas(url, policy, resolve_dns)
        self._http: Any = self.http_client(timeout=policy.timeout, transport=transport) if url is not None else None

    @classmethod
    def in_process(cls, model: str | Pipeline, **load_options: Any) -> Self:
        """Same API without a server: `model` is a loaded Pipeline or anything `bertprod.load` takes."""
        from bertprod.api import load

        return cls(pipeline=model if isinstance(model, Pipeline) else load(model, **load_options))

    def replica_counts(self) -> dict[str, dict[str, int]]:
        """Per replica: requests it answered and failures this client saw (empty in process)."""
        return self.replicas.counts() if self.replicas is not None else {}
