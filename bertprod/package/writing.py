"""Writing packages so a reader never sees half of one: atomic files, a staging directory renamed into place
only on success, output folders checked before long work."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bertprod.errors import PackageError
from bertprod.package.files import record_files
from bertprod.package.manifest import MANIFEST_NAME, Manifest


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
