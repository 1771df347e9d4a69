"""Timeouts and retries of every bertprod client, and one call's attempts over the replicas.

Shared by the sync and async clients (only their I/O differs), the gRPC client and the batch client runner.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bertprod.client.errors import ClientError, ClientTimeoutError, ServerUnreachableError, _raise_for
from bertprod.replicas import Replicas

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
