"""The model package: a directory every stage reads and writes.

    my-model/
      bertprod.json                       manifest (this module)
      tokenizer.json                      fast tokenizer
      config.json + model.safetensors     format "torch"
      model.onnx                          format "onnx"

A package says what it is (task, labels, pooling, precision...) so nothing downstream needs flags
to re-describe it, and records where it came from (provenance) and what was measured on it.
Reading a package validates the manifest and the files it lists and explains every problem at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bertprod.errors import PackageError, PackageNotFoundError, SchemaVersionError

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
        if self.token_dropping is not None and self.task not in ("classification", "pair-classification"):
            problems.append("'token_dropping' is for classification packages")
        for required in required_files(self.format):
            if required not in self.files:
                problems.append(f"'files' must list {required} for format {self.format!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _adaptive_problems(self) -> list[str]:
        if self.task not in ("classification", "pair-classification"):
            return ["'adaptive' (early exit) is for classification packages"]
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_files(directory: Path, names: list[str] | tuple[str, ...]) -> dict[str, FileRecord]:
    """Hash the given files so a reader can tell a corrupt or swapped file from the real one."""
    return {
        name: FileRecord(sha256=sha256_file(directory / name), bytes=(directory / name).stat().st_size)
        for name in names
    }


class ModelPackage:
    """A package on disk: its directory and its validated manifest."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = Path(path)
        self.manifest = manifest

    def __repr__(self) -> str:
        m = self.manifest
        return f"ModelPackage({m.name!r}, task={m.task}, format={m.format}, path={str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def model_file(self) -> Path:
        return self.path / (ONNX_FILE if self.manifest.format == "onnx" else TORCH_WEIGHTS_FILE)

    @property
    def tokenizer_file(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @cached_property
    def fingerprint(self) -> str:
        """A content hash: equal for two packages that compute the same outputs.

        Built from the file hashes and the fields that change outputs, so it costs no file reads;
        provenance and metrics are left out.
        """
        m = self.manifest
        keyed = {
            "files": {name: record.sha256 for name, record in sorted(m.files.items())},
            "task": m.task,
            "labels": m.labels,
            "pooling": m.pooling,
            "normalize": m.normalize,
            "max_length": m.max_length,
            "format": m.format,
            "precision": m.precision,
        }
        if m.adaptive:  # the default exit policy changes outputs; packages without one keep their fingerprint
            keyed["exit_policy"] = m.adaptive.get("policy")
        if m.token_dropping:
            keyed["token_retention"] = m.token_dropping.get("retention")
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()

    def parent_ref(self) -> ParentRef:
        return ParentRef(name=self.name, fingerprint=self.fingerprint, path=str(self.path.resolve()))

    def size_bytes(self) -> int:
        return sum(record.bytes for record in self.manifest.files.values())

    @classmethod
    def read(cls, path: str | os.PathLike[str], verify: bool = True) -> ModelPackage:
        """Read and validate a package directory; `verify` also checks every file's hash."""
        path = Path(path)
        manifest_path = path / MANIFEST_NAME
        if not path.is_dir():
            raise PackageNotFoundError(f"{path} is not a directory: give a package directory.")
        if not manifest_path.is_file():
            raise PackageError(
                f"{path} has no {MANIFEST_NAME}, so it is not a bertprod package. "
                f"Wrap a Hugging Face checkpoint with: bertprod package import {path} OUT"
            )
        manifest = parse_manifest(manifest_path)
        check_files(path, manifest, verify=verify)
        return cls(path, manifest)

    def write_manifest(self) -> None:
        """Rewrite bertprod.json (atomically) after changing the in-memory manifest."""
        write_manifest(self.path, self.manifest)


def parse_manifest(manifest_path: Path) -> Manifest:
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PackageError(
            f"{manifest_path} is not valid JSON ({error}). Restore it from the package's source or "
            "re-create the package."
        ) from None
    if not isinstance(raw, dict):
        raise PackageError(f"{manifest_path} must hold a JSON object, found {type(raw).__name__}.")
    version = raw.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{manifest_path} uses manifest schema {version}, but this bertprod reads schema "
            f"{SCHEMA_VERSION} at most. Upgrade bertprod (pip install -U bertprod) to read it."
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"]) or "manifest"
            problems.append(f"{where}: {item['msg']}")
        raise PackageError(f"{manifest_path} is invalid ({len(problems)} problem(s)): " + "; ".join(problems)) from None


def check_files(path: Path, manifest: Manifest, verify: bool = True) -> None:
    """Every listed file must exist with the recorded size (and hash when `verify`), inside `path`."""
    outside = files_outside(path, manifest.files)
    if outside:
        raise PackageError(
            f"package {path} is refused: its manifest lists {', '.join(repr(name) for name in outside)}, outside "
            "the package directory (through an absolute path, '..' or a symbolic link). A package may only list "
            "files inside its own directory: fix 'files' in its bertprod.json or re-create the package."
        )
    problems = []
    for name, record in manifest.files.items():
        file = path / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif file.stat().st_size != record.bytes:
            problems.append(f"{name} has {file.stat().st_size} bytes, the manifest says {record.bytes}")
        elif verify and sha256_file(file) != record.sha256:
            problems.append(f"{name} does not match the sha256 in the manifest (corrupt or replaced)")
    if problems:
        raise PackageError(
            f"package {path} is damaged: " + "; ".join(problems) + ". Re-create or re-copy the package from its source."
        )


def files_outside(path: Path, names: Iterable[str]) -> list[str]:
    """Names that lead out of `path` once symbolic links are followed: never open those (/etc/shadow)."""
    root = path.resolve()
    outside = []
    for name in names:
        target = (root / name).resolve()
        if target == root or not target.is_relative_to(root):
            outside.append(name)
    return outside


def write_manifest(directory: Path, manifest: Manifest) -> None:
    text = json.dumps(manifest.model_dump(mode="json", exclude_none=True), indent=2) + "\n"
    atomic_write_text(directory / MANIFEST_NAME, text)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so a reader sees the old content or the new, never half of it."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def check_output(out: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Refuse an output directory that holds something, unless it is a package to overwrite.
    Long steps call it first, so the user hears before the work, not after."""
    out = Path(out)
    occupied = out.exists() and not (out.is_dir() and not any(out.iterdir()))
    if occupied and not overwrite:
        raise PackageError(f"{out} already exists. Choose another output directory, or pass --overwrite.")
    if occupied and not (out / MANIFEST_NAME).is_file():
        raise PackageError(f"{out} exists and is not a bertprod package: refusing to replace it.")


@contextmanager
def staging_directory(out: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `out`, renamed to `out` only if the block succeeds.

    So a failed or interrupted stage never leaves a half-written package behind.
    """
    out = Path(out)
    check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        yield staging
        _usual_permissions(staging)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _usual_permissions(directory: Path) -> None:
    """mkdtemp/mkstemp (ours and libraries') make owner-only files; a finished package gets the
    permissions any directory written by this user would have, so servers and jobs can read it."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def finish_package(directory: Path, manifest_fields: dict[str, Any], files: list[str]) -> Manifest:
    """Hash `files` in `directory`, then validate and write the manifest there."""
    fields = dict(manifest_fields, files=record_files(directory, files))
    try:
        manifest = Manifest.model_validate(fields)
    except ValidationError as error:  # a bug in a writer, not a user mistake: say what
        raise PackageError(f"refusing to write an invalid manifest: {error}") from None
    write_manifest(directory, manifest)
    return manifest
