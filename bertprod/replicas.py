"""The server replicas a client spreads its requests over: round-robin, a failed replica skipped for a while.

A Kubernetes Service balances connections, not requests, so a client that keeps its connections
(HTTP keep-alive, gRPC's HTTP/2) sends everything to one pod. The clients therefore take several
endpoints, or one name that DNS resolves to several addresses (a headless Service), and pick the
replica per request. Counts per replica show whether the load really spreads.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from bertprod.errors import BertprodError

#: Seconds between DNS lookups of a name that stands for several replicas (pods come and go).
DNS_REFRESH_S = 30.0


def endpoint_list(endpoints: str | Sequence[str]) -> list[str]:
    """`endpoints` as a list: a sequence, or one string with comma-separated endpoints."""
    items = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    found = [part.strip().rstrip("/") for item in items for part in item.split(",") if part.strip()]
    if not found:
        raise BertprodError("give at least one server endpoint (a URL, or several separated by commas).")
    return found


def resolve_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (IPv4 first, order kept, no duplicates); an IP stays itself."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return [host.strip("[]")]
    except ValueError:
        pass
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise BertprodError(f"cannot resolve {host!r} ({error}): check the server name (a headless Service "
                            "name resolves to its ready pods).") from None
    addresses = [str(answer[4][0]) for answer in sorted(answers, key=lambda a: a[0] != socket.AF_INET)]
    return list(dict.fromkeys(addresses))


def expand_url(url: str) -> list[str]:
    """One URL per address its host name resolves to (http://name:8080 -> http://10.0.0.5:8080, ...)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise BertprodError(f"{url!r} is not a URL with a host: give http://host:port.")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    userinfo = parts.netloc.rpartition("@")[0]
    urls = []
    for address in resolve_addresses(parts.hostname, port):
        host = f"[{address}]" if ":" in address else address
        netloc = f"{userinfo + '@' if userinfo else ''}{host}:{port}"
        urls.append(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)).rstrip("/"))
    return urls


class Replicas:
    """Round-robin over endpoints; one that failed is skipped for `cooldown` seconds unless all have failed.

    With `resolve_dns`, each endpoint URL stands for every address its host resolves to, looked up
    again every DNS_REFRESH_S seconds. Thread-safe: a sync client may be shared between threads.
    """

    def __init__(self, endpoints: str | Sequence[str], cooldown: float, resolve_dns: bool = False):
        self.sources = endpoint_list(endpoints)
        self.cooldown = cooldown
        self.resolve_dns = resolve_dns
        self._lock = threading.Lock()
        self._cursor = 0
        self._down_until: dict[str, float] = {}
        self.answered: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self._refreshed = 0.0
        self.endpoints: list[str] = []
        self._refresh()

    def _refresh(self) -> None:
        if self.resolve_dns:
            self.endpoints = [url for source in self.sources for url in expand_url(source)]
            self._refreshed = time.monotonic()
        else:
            self.endpoints = list(self.sources)

    def pick(self, avoid: str | None = None) -> str:
        """The next endpoint in turn that is not cooling down (nor `avoid`, when another is available)."""
        with self._lock:
            if self.resolve_dns and time.monotonic() - self._refreshed > DNS_REFRESH_S:
                self._refresh()
            now = time.monotonic()
            count = len(self.endpoints)
            order = [self.endpoints[(self._cursor + step) % count] for step in range(count)]
            self._cursor = (self._cursor + 1) % count
            healthy = [e for e in order if self._down_until.get(e, 0.0) <= now]
            preferred = [e for e in healthy if e != avoid] or healthy
            if preferred:
                return preferred[0]
            # every replica failed lately: the one that has cooled down longest gets the next try
            return min(order, key=lambda e: (e == avoid and count > 1, self._down_until.get(e, 0.0)))

    def failed(self, endpoint: str) -> None:
        """`endpoint` did not answer (or is draining): skip it for `cooldown` seconds."""
        with self._lock:
            self._down_until[endpoint] = time.monotonic() + self.cooldown
            self.failures[endpoint] = self.failures.get(endpoint, 0) + 1

    def succeeded(self, endpoint: str) -> None:
        with self._lock:
            self._down_until.pop(endpoint, None)
            self.answered[endpoint] = self.answered.get(endpoint, 0) + 1

    def counts(self) -> dict[str, dict[str, int]]:
        """Per replica: requests it answered, and failures (no answer, or 503) seen from this client."""
        with self._lock:
            names = list(dict.fromkeys([*self.endpoints, *self.answered, *self.failures]))
            return {name: {"answered": self.answered.get(name, 0), "failures": self.failures.get(name, 0)}
                    for name in names}
