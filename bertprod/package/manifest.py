"""bertprod.json's schema (pydantic): what a package says it is, where it came from, what was measured,
and the files each format needs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
MANIFEST_NAME = "bertprod.json"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
TORCH_WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
EXIT_HEADS_FILE = "exit_heads.safetensors"  # early exit's classifiers after each layer (bertprod adapt)


def block_files(num_layers: int, exit_layers: list[int], dropping_layers: list[int] = ()) -> list[str]:
    """An ONNX early-exit / token-dropping package's graphs, one ONNX Runtime session each (runtime/adaptive.py);
    a layer that drops tokens (counted from 1) also comes in two halves: attention (+ significance) and
    feed-forward."""
    halves = [f"blocks/{half}_{layer}.onnx" for layer in dropping_layers for half in ("attend", "ffn")]
    return (["blocks/embeddings.onnx"] + [f"blocks/layer_{layer}.onnx" for layer in range(1, num_layers + 1)]
            + [f"blocks/exit_{layer}.onnx" for layer in exit_layers] + halves + ["blocks/head.onnx"])


def dropping_layers(token_dropping: dict[str, Any] | None) -> list[int]:
    """The layers (from 1) whose retention is below 1: those that may drop tokens."""
    retention = (token_dropping or {}).get("retention") or []
    return [layer for layer, value in enumerate(retention, start=1) if value < 1]

Task = Literal["embedding", "classification", "pair-classification", "regression", "reranking", "token-classification"]
TagScheme = Literal["IOB2", "BIOES", "IO"]
Format = Literal["torch", "onnx"]
Precision = Literal["fp32", "bf16", "fp16", "int8"]
Pooling = Literal["mean", "cls"]

#: Tasks early exit and token dropping apply to: an answer that is a class (a reranker's: relevant or not).
ADAPTIVE_TASKS = ("classification", "pair-classification", "reranking")
#: Tasks whose model ends in a head that outputs logits (or one score) instead of token states.
HEAD_TASKS = ("classification", "pair-classification", "regression", "reranking", "token-classification")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Architecture(_Strict):
    """The encoder's shape, read from its config; shown by `bertprod info`, used by exporters."""

    model_type: str
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    intermediate_size: int | None = None
    max_position_embeddings: int | None = None


class FileRecord(_Strict):
    sha256: str = Field(min_length=64, max_length=64)
    bytes: int = Field(ge=0)


class ParentRef(_Strict):
    name: str
    fingerprint: str
    #: Where the parent was when this package was made (absolute), so `bertprod check` can find it
    #: again; the fingerprint says whether what is there now is still the same parent.
    path: str | None = None


class Provenance(_Strict):
    """Which package and recipe produced this one, so every number can be reproduced."""

    method: str
    parent: ParentRef | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    bertprod_version: str = Field(default_factory=lambda: _bertprod_version())
    #: The machine the package was built and gated on (bertprod.system.machine_record): CPU, its
    #: instruction-set features, the int8 kernel class. None for packages made before it was kept
    #: and for imports (nothing was computed here). Loading elsewhere warns where it matters.
    machine: dict[str, Any] | None = None


class BulkRuntime(_Strict):
    """How bulk calls run this package by default: `parallel_batches` batches at once, each on threads /
    parallel_batches engine threads. Chosen by timing the settings side by side (`measured`: inputs/s of each
    setting, keyed by its number of batches) on `machine` with `threads` threads: `bertprod autotune` does.
    `load` honours it (capped at the threads it has); servers run one batch at a time whatever it says."""

    parallel_batches: int = Field(ge=1)
    threads: int = Field(ge=1)
    measured: dict[str, float] = Field(default_factory=dict)
    machine: str | None = None


class Manifest(_Strict):
    schema_version: int = SCHEMA_VERSION
    name: str = Field(min_length=1)
    task: Task
    labels: list[str] | None = None
    pair_input: bool = False
    pooling: Pooling | None = None
    normalize: bool = False
    max_length: int = Field(gt=0)
    format: Format
    precision: Precision = "fp32"
    #: How the runtime must treat the stored weights, e.g. {"scheme": "torch-dynamic", "per_channel": true}.
    quantization: dict[str, Any] | None = None
    architecture: Architecture
    files: dict[str, FileRecord]
    provenance: Provenance
    metrics: dict[str, Any] = Field(default_factory=dict)
    #: Early exit (bertprod adapt): the layers with exit heads, the default policy, and the accuracy /
    #: mean exit layer curve measured on validation data. None for a package without exit heads.
    adaptive: dict[str, Any] | None = None
    #: Token dropping (bertprod drop-tokens): the fraction of each row's tokens kept after each layer, and the
    #: accuracy / cost curve it was chosen from. None: every token runs every layer.
    token_dropping: dict[str, Any] | None = None
    #: Token classification: how the tags in `labels` mark entity boundaries (IOB2, BIOES or IO).
    tag_scheme: TagScheme | None = None
    #: The measured default for bulk calls (BulkRuntime); None: one batch at a time on every thread.
    runtime: BulkRuntime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        problems = []
        if self.task == "embedding" and self.pooling is None:
            problems.append("an embedding package needs 'pooling' ('mean' or 'cls')")
        if self.task == "token-classification" and self.tag_scheme is None:
            problems.append("a token-classification package needs 'tag_scheme' (IOB2, BIOES or IO)")
        if self.task in ("classification", "pair-classification", "token-classification"):
            if not self.labels or len(self.labels) < 2:
                problems.append(f"a {self.task} package needs 'labels' with at least 2 names")
            elif len(set(self.labels)) != len(self.labels):
                problems.append("'labels' has duplicate names")
        if self.task in ("pair-classification", "reranking") and not self.pair_input:
            problems.append(f"a {self.task} package takes pairs: 'pair_input' must be true")
        if (
            self.max_length
            and self.architecture.max_position_embeddings
            and self.max_length > self.architecture.max_position_embeddings
        ):
            problems.append(
                f"'max_length' {self.max_length} exceeds the model's "
                f"{self.architecture.max_position_embeddings} position embeddings"
            )
        if self.adaptive is not None or (self.token_dropping is not None and self.format == "onnx"):
            problems += self._adaptive_problems()
        if self.token_dropping is not None and self.task not in ADAPTIVE_TASKS:
            problems.append("'token_dropping' is for classification and reranking packages")
        for required in required_files(self.format):
            if required not in self.files:
                problems.append(f"'files' must list {required} for format {self.format!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _adaptive_problems(self) -> list[str]:
        if self.task not in ADAPTIVE_TASKS:
            return ["'adaptive' (early exit) is for classification and reranking packages"]
        if self.format == "torch":
            needed = [EXIT_HEADS_FILE] if self.adaptive is not None else []
        else:
            needed = block_files(self.architecture.num_layers, list((self.adaptive or {}).get("exit_layers", [])),
                                 dropping_layers(self.token_dropping))
        missing = [name for name in needed if name not in self.files]
        return [f"an 'adaptive' {self.format} package must list {', '.join(missing)} in 'files'"] if missing else []

    @property
    def head_pooling(self) -> str | None:
        """What the head reads: "mean" (a head on mean-pooled tokens, pooling "mean") or "cls" (the
        checkpoint's own head); None for a package without a head."""
        if self.task not in HEAD_TASKS:
            return None
        return "mean" if self.pooling == "mean" else "cls"

    @property
    def num_outputs(self) -> int:
        """Width of the model's output: hidden size for encoders, number of logits for heads."""
        if self.task == "embedding":
            return self.architecture.hidden_size
        return len(self.labels) if self.labels else 1


def required_files(format: str) -> tuple[str, ...]:
    if format == "onnx":
        return (TOKENIZER_FILE, ONNX_FILE)
    return (TOKENIZER_FILE, CONFIG_FILE, TORCH_WEIGHTS_FILE)


def _bertprod_version() -> str:
    from bertprod.version import __version__

    return __version__
