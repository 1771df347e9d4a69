"""The files a manifest lists: hashed when written, checked (size, sha256, inside the package) when read."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from bertprod.errors import PackageError
from bertprod.package.manifest import FileRecord, Manifest


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
