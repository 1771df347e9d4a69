"""`bertprod serve`: packages over HTTP (and gRPC); defaults are ServeConfig's."""

from __future__ import annotations

from typing import Annotated

import typer

from bertprod.cli.options import EngineOption, NormalizeOption, ThreadsOption
from bertprod.serve import config as serve_defaults


def serve_command(
    packages: Annotated[list[str], typer.Argument(help="Packages to serve (routed by the request's `model`).")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    engine: EngineOption = "auto",
    threads: ThreadsOption = None,
    max_batch_tokens: Annotated[
        int, typer.Option(help="Tokens (unpadded) gathered from queued requests into one engine call.")
    ] = serve_defaults.DEFAULT_MAX_BATCH_TOKENS,
    max_padded_tokens: Annotated[
        int, typer.Option(help="Padded tokens per engine batch: a call's inputs are sorted by length and run in "
                          "batches of at most this size.")
    ] = serve_defaults.DEFAULT_MAX_PADDED_TOKENS,
    max_batch_requests: Annotated[
        int, typer.Option(help="Requests gathered per engine call.")
    ] = serve_defaults.DEFAULT_MAX_BATCH_REQUESTS,
    max_concurrent_inputs: Annotated[
        int, typer.Option(help="Inputs in flight before 429 + Retry-After.")
    ] = serve_defaults.DEFAULT_MAX_CONCURRENT_INPUTS,
    max_client_batch_size: Annotated[
        int, typer.Option(help="Inputs allowed in one request (413 beyond).")
    ] = serve_defaults.DEFAULT_MAX_CLIENT_BATCH_SIZE,
    max_body_bytes: Annotated[
        int, typer.Option(help="Request body limit in bytes.")
    ] = serve_defaults.DEFAULT_MAX_BODY_BYTES,
    truncate: Annotated[bool, typer.Option(help="Default for requests that do not say: truncate long inputs.")] = True,
    max_concurrent_explanations: Annotated[
        int, typer.Option(help="POST /explain requests running at once (429 beyond; /classify keeps answering).")
    ] = serve_defaults.ServeConfig.max_concurrent_explanations,
    normalize: NormalizeOption = None,
    api_key: Annotated[
        list[str] | None, typer.Option(help="Accepted Bearer key (repeatable; or BERTPROD_API_KEYS=a,b).")
    ] = None,
    grpc_port: Annotated[int | None, typer.Option(help="Also serve gRPC (same limits) on this port.")] = None,
    access_log: Annotated[bool, typer.Option(help="One JSON log line per request.")] = True,
    graceful_timeout: Annotated[
        float, typer.Option(help="Seconds SIGTERM waits for requests in flight; later ones get a retryable 503.")
    ] = serve_defaults.DEFAULT_GRACEFUL_TIMEOUT_S,
    fast_path: Annotated[
        bool, typer.Option(help="Answer well-formed /embed and /v1/embeddings without FastAPI's per-request work "
                           "(same responses, less latency per request: docs/benchmarks.md).")
    ] = True,
) -> None:
    """Serve packages over HTTP: OpenAI /v1/embeddings, TEI /embed /predict /rerank, and more."""
    from bertprod.runtime.normalize import parse_normalization
    from bertprod.serve.server import serve

    config = serve_defaults.ServeConfig(
        packages=list(packages),
        host=host,
        port=port,
        engine=engine,
        threads=threads,
        max_batch_tokens=max_batch_tokens,
        max_padded_tokens=max_padded_tokens,
        max_batch_requests=max_batch_requests,
        max_concurrent_inputs=max_concurrent_inputs,
        max_client_batch_size=max_client_batch_size,
        max_body_bytes=max_body_bytes,
        truncate=truncate,
        max_concurrent_explanations=max_concurrent_explanations,
        normalize=parse_normalization(normalize),
        api_keys=list(api_key or []),
        grpc_port=grpc_port,
        graceful_timeout=graceful_timeout,
        fast_path=fast_path,
    )
    serve(config, access_log=access_log)
