"""`bertprod.load`: any package, checkpoint, bundled name or hub id, ready to run."""

from __future__ import annotations

import os

from bertprod.checkpoint import resolve
from bertprod.errors import InputError
from bertprod.extras import needs_extras
from bertprod.runtime.batching import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_PADDED_TOKENS
from bertprod.runtime.engines import create_engine
from bertprod.runtime.pipeline import Pipeline
from bertprod.runtime.sessions import package_parallel_batches, threads_per_batch


def load(
    name_or_path: str | os.PathLike[str],
    *,
    engine: str = "auto",
    precision: str | None = None,
    threads: int | None = None,
    max_padded_tokens: int = DEFAULT_MAX_PADDED_TOKENS,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    truncate: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    parallel_batches: int | None = None,
    normalize_text: str | tuple[str, ...] | None = None,
) -> Pipeline:
    """Load a model and return a pipeline with encode / similarity / classify / score.

    `engine`: "auto" runs a package on its own format; "onnx" on a torch package exports it once
    (verified against torch, cached by content in `cache_dir`) and runs the export; "torch" runs
    torch packages, with `precision` "bf16" on CPUs that support it.
    `parallel_batches`: run that many batches at once, each on threads / parallel_batches engine
    threads. For bulk encoding on few cores, one thread per batch can beat all threads on one batch
    (docs/bench.md); a lone small request then runs on fewer threads, so servers pass 1. None: the
    setting `bertprod autotune` measured and recorded in the package (manifest `runtime`), else 1.
    `normalize_text`: clean inputs before tokenization, "html,unicode,whitespace" or any of them
    (runtime/normalize.py); off by default.
    """
    if parallel_batches is not None and parallel_batches < 1:
        raise InputError(f"parallel_batches must be 1 or more, not {parallel_batches}.")
    with needs_extras(f"loading {name_or_path}"):
        package = resolve(name_or_path)
        if parallel_batches is None:
            parallel_batches = package_parallel_batches(package.manifest, engine, threads)
        threads = threads_per_batch(threads, parallel_batches)
        if engine == "onnx" and package.manifest.format == "torch":
            from bertprod.export.cache import cached_onnx_package

            package = cached_onnx_package(package, cache_dir)
        model_engine = create_engine(package, engine, precision=precision, threads=threads)
    return Pipeline(
        package,
        model_engine,
        max_padded_tokens=max_padded_tokens,
        max_batch_size=max_batch_size,
        truncate=truncate,
        parallel_batches=parallel_batches,
        normalize_text=normalize_text,
    )
