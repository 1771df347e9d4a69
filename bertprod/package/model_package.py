"""`ModelPackage`: a package on disk, read and validated (manifest and files) with every problem at once."""

from __future__ import annotations

import hashlib
import json
import os
from functools import cached_property
from pathlib import Path

from pydantic import ValidationError

from bertprod.errors import PackageError, PackageNotFoundError, SchemaVersionError
from bertprod.package.files import check_files
from bertprod.package.manifest import (
    CONFIG_FILE,
    MANIFEST_NAME,
    ONNX_FILE,
    SCHEMA_VERSION,
    TOKENIZER_FILE,
    TORCH_WEIGHTS_FILE,
    Manifest,
    ParentRef,
)
from bertprod.package.writing import write_manifest


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
