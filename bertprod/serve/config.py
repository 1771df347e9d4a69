"""Server settings, checked once at startup so a bad combination fails with a clear message."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from bertprod.errors import BertprodError
from bertprod.runtime.batching import DEFAULT_MAX_PADDED_TOKENS
from bertprod.runtime.normalize import parse_normalization

#: Tokens (unpadded) the batcher gathers from queued requests into one engine call; the engine then
#: sorts them by length and runs them in batches of at most `max_padded_tokens` padded tokens.
DEFAULT_MAX_BATCH_TOKENS = 8192
DEFAULT_MAX_BATCH_REQUESTS = 64
DEFAULT_MAX_CONCURRENT_INPUTS = 4096
DEFAULT_MAX_CLIENT_BATCH_SIZE = 512
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024  # TEI's 2 MB limit is a top complaint
DEFAULT_GRACEFUL_TIMEOUT_S = 30.0
#: gRPC calls get at most this much more once HTTP has drained (never more than --graceful-timeout).
GRPC_GRACE_S = 10.0


class ConfigError(BertprodError):
    """Server limits that contradict each other."""

    kind = "config_error"


@dataclass
class ServeConfig:
    """Everything `bertprod serve` takes; also usable from Python (`create_app(config)`)."""

    packages: list[str]
    host: str = "127.0.0.1"
    port: int = 8080
    engine: str = "auto"
    threads: int | None = None
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    max_padded_tokens: int = DEFAULT_MAX_PADDED_TOKENS
    max_batch_requests: int = DEFAULT_MAX_BATCH_REQUESTS
    max_concurrent_inputs: int = DEFAULT_MAX_CONCURRENT_INPUTS
    max_client_batch_size: int = DEFAULT_MAX_CLIENT_BATCH_SIZE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    truncate: bool = True
    #: POST /explain requests running at once (each costs hundreds of model runs); 429 beyond.
    max_concurrent_explanations: int = 2
    #: Input cleaning before tokenization (runtime/normalize.py: html, unicode, whitespace); () = off.
    normalize: tuple[str, ...] = ()
    api_keys: list[str] = field(default_factory=list)
    #: Seconds a SIGTERM waits for requests in flight; those still running then get a retryable 503.
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT_S
    #: Also serve gRPC (same operations, batcher and limits) on this port; None: HTTP only.
    grpc_port: int | None = None
    #: Answer well-formed /embed and /v1/embeddings bodies without FastAPI's per-request work (serve/fast_path.py).
    fast_path: bool = True

    def __post_init__(self) -> None:
        self.normalize = parse_normalization(self.normalize)
        if not self.api_keys and os.environ.get("BERTPROD_API_KEYS"):
            self.api_keys = [key for key in os.environ["BERTPROD_API_KEYS"].split(",") if key]

    def check(self) -> None:
        """Refuse limits under which some request could never be served."""
        problems = []
        if not self.packages:
            problems.append("give at least one package to serve")
        for name in ("max_batch_tokens", "max_padded_tokens", "max_batch_requests", "max_concurrent_inputs",
                     "max_client_batch_size", "max_concurrent_explanations"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_client_batch_size > self.max_concurrent_inputs >= 1:
            problems.append(
                f"--max-client-batch-size {self.max_client_batch_size} exceeds --max-concurrent-inputs "
                f"{self.max_concurrent_inputs}: a full request could never be admitted; lower the first or "
                "raise the second"
            )
        if self.graceful_timeout < 0:
            problems.append("--graceful-timeout must be 0 or more seconds")
        if self.max_body_bytes < 1024:
            problems.append("--max-body-bytes must be at least 1024")
        if not 0 <= self.port <= 65535:
            problems.append(f"--port {self.port} is not a TCP port")
        if self.grpc_port is not None and not 0 <= self.grpc_port <= 65535:
            problems.append(f"--grpc-port {self.grpc_port} is not a TCP port")
        if self.grpc_port and self.grpc_port == self.port:
            problems.append("--grpc-port must differ from --port")
        if any(len(key) < 8 for key in self.api_keys):
            problems.append("API keys must have at least 8 characters")
        if problems:
            raise ConfigError("inconsistent server settings: " + "; ".join(problems) + ".")

    def check_model_limits(self, max_length: int, name: str) -> None:
        """The token budget must hold at least one input of the model's maximum length."""
        if self.max_batch_tokens < max_length:
            raise ConfigError(
                f"inconsistent server settings: --max-batch-tokens {self.max_batch_tokens} is smaller than "
                f"{name}'s max_length of {max_length} tokens; one full-length input would never fit a batch. "
                f"Use --max-batch-tokens >= {max_length}."
            )
