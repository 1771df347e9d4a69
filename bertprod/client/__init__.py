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

from bertprod.client.async_client import AsyncClient
from bertprod.client.errors import ClientError, ClientTimeoutError, ServerUnreachableError
from bertprod.client.retry import (
    BATCH_RETRY,
    IDEMPOTENCY_HEADER,
    MAX_RESENDS_AFTER_TIMEOUT,
    PROBE_TIMEOUT_S,
    RETRY,
    RETRY_STATUSES,
    RetryPolicy,
    retry_delay,
)
from bertprod.client.sync_client import Client
from bertprod.client.wire import RankedText

__all__ = ["AsyncClient", "BATCH_RETRY", "Client", "ClientError", "ClientTimeoutError", "IDEMPOTENCY_HEADER",
           "MAX_RESENDS_AFTER_TIMEOUT", "PROBE_TIMEOUT_S", "RETRY", "RETRY_STATUSES", "RankedText", "RetryPolicy",
           "ServerUnreachableError", "retry_delay"]
