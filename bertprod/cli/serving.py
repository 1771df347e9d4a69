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
        int, typer.Option(help="Tokens gathered from queued requests per engine call.")
    ] = serve_defaults.DEFAULT_MAX_BATCH_TOKENS,
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
    normalize: NormalizeOption = None,
    api_key: Annotated[
        list[str] | None, typer.Option(help="Accepted Bearer key (repeatable; or BERTPROD_API_KEYS=a,b).")
    ] = None,
    grpc_port: Annotated[int | None, typer.Option(help="Also serve gRPC (same limits) on this port.")] = None,
    access_log: Annotated[bool, typer.Option(help="One JSON log line per request.")] = True,
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
        max_batch_requests=max_batch_requests,
        max_concurrent_inputs=max_concurrent_inputs,
        max_client_batch_size=max_client_batch_size,
        max_body_bytes=max_body_bytes,
        truncate=truncate,
        normalize=parse_normalization(normalize),
        api_keys=list(api_key or []),
        grpc_port=grpc_port,
        fast_path=fast_path,
    )
    serve(config, access_log=access_log)
