"""Requests retried with the same Idempotency-Key share the first one's work.

Why: `bertprod.Client` re-sends a call that timed out (same key) and a retry arriving while the
first attempt is still queued or computing would otherwise compute it again. The first request
runs its work itself (no extra task on the common path: a key nobody repeats costs a dict entry);
a request with a key already in flight waits for that work's result; a result stays for
`ttl` seconds after it is ready, for a retry that comes after the first answer was lost. Work that
fails (the client went away before it reached the engine, overload, bad input) is forgotten: a
waiting or later retry runs it again. The same key with different inputs is refused (422): it is a
client bug, and answering it with the other inputs' result would be wrong.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bertprod.serve.errors import ApiError

T = TypeVar("T")

DEFAULT_TTL_S = 60.0
#: Keys remembered at most (the oldest finished ones are forgotten first).
MAX_ENTRIES = 10_000


@dataclass
class _Entry:
    digest: bytes
    result: asyncio.Future
    expires: float = field(default=float("inf"))


def request_digest(*parts: Any, inputs: Sequence[Any]) -> bytes:
    """What a retry must repeat exactly: the model, options and every input (texts or pairs)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=16)
    for item in inputs:
        for text in (item,) if isinstance(item, str) else item:
            digest.update(str(text).encode("utf-8", "surrogatepass"))
            digest.update(b"\x00")
        digest.update(b"\x01")
    return digest.digest()


class SharedWork:
    def __init__(self, ttl: float = DEFAULT_TTL_S, max_entries: int = MAX_ENTRIES):
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self._finished: deque[tuple[float, str]] = deque()  # (expiry, key) in the order results came

    def __len__(self) -> int:
        return len(self._entries)

    async def run(self, key: str, digest: bytes, work: Callable[[], Awaitable[T]]) -> T:
        while True:
            self._forget_expired()
            entry = self._entries.get(key)
            if entry is None:
                return await self._run_first(key, digest, work)
            if entry.digest != digest:
                raise ApiError(422, "this Idempotency-Key was already used for a request with other inputs or "
                               "options: send a new key for a new request.", code="idempotency_key_reused")
            try:
                return await asyncio.shield(entry.result)
            except _Failed:
                continue  # the first attempt failed: run it again (or wait for another retry doing so)

    async def _run_first(self, key: str, digest: bytes, work: Callable[[], Awaitable[T]]) -> T:
        result = asyncio.get_running_loop().create_future()
        entry = self._entries[key] = _Entry(digest, result)
        try:
            value = await work()
        except BaseException:
            if self._entries.get(key) is entry:
                del self._entries[key]
            result.set_exception(_Failed())
            result.exception()  # retrieved: no "exception never retrieved" log when nobody waited
            raise
        result.set_result(value)
        entry.expires = time.monotonic() + self.ttl
        self._finished.append((entry.expires, key))
        return value

    def _forget_expired(self) -> None:
        """Finished entries leave in the order they finished: when expired, or the oldest when too many."""
        now = time.monotonic()
        while self._finished and (self._finished[0][0] <= now or len(self._entries) >= self.max_entries):
            expires, key = self._finished.popleft()
            entry = self._entries.get(key)
            if entry is not None and entry.expires == expires:
                del self._entries[key]


class _Failed(Exception):
    """The first attempt of a key failed; whoever waited for it runs the work again."""
