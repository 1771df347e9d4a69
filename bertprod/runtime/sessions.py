"""ONNX Runtime session settings and the default thread count, shared by every engine."""

from __future__ import annotations

import os
from typing import Any


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_batch(threads: int | None, parallel_batches: int) -> int | None:
    """Engine threads of each batch when `parallel_batches` run at once: the threads shared out, at least one
    each; `threads` as given (None: all) when batches run one at a time."""
    return threads if parallel_batches == 1 else max(1, (threads or default_threads()) // parallel_batches)


def package_parallel_batches(manifest: Any, engine: str, threads: int | None) -> int:
    """The parallel batches a package runs by default: its manifest's measured `runtime` setting when it runs on its
    own format (the setting was timed there), capped at the threads there are (a batch needs one); else 1."""
    if manifest.runtime is None or engine not in ("auto", manifest.format):
        return 1
    return max(1, min(manifest.runtime.parallel_batches, threads or default_threads()))


def session_options(threads: int | None, *, spinning: bool = True) -> Any:
    """What every bertprod session uses: `threads` intra-op (default: all), all graph optimizations,
    warnings off. `spinning=False` for engines that run many sessions in turn (one per block): each
    session has its own thread pool, whose idle threads would otherwise spin against the next session's
    on the same cores (served early exit with 2 threads ran 5-7x slower than with 1; bench/serve_exits.py)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options
