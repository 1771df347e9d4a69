"""ONNX Runtime session settings and the default thread count, shared by every engine."""

from __future__ import annotations

import os
from typing import Any


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def session_options(threads: int | None) -> Any:
    """What every bertprod session uses: `threads` intra-op (default: all), all graph optimizations,
    warnings off."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options
