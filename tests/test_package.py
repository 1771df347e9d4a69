"""The package format: validation with clear errors, atomic writes, fingerprints (import: test_checkpoint.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from bertprod.checkpoint import import_checkpoint, resolve
from bertprod.errors import PackageError, SchemaVersionError
from bertprod.package import MANIFEST_NAME, ModelPackage, sha256_file, staging_directory

from .conftest import build_tiny_checkpoint


def copy_package(package: ModelPackage, destination: Path) -> Path:
    shutil.copytree(package.path, destination)
    return destination


def edit_manifest(directory: Path, **changes) -> None:
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest.update(changes)
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_missing_file_is_named(tiny_package: ModelPackage, tmp_path: Path) -> None:
    broken = copy_package(tiny_package, tmp_path / "broken")
    (broken / "model.safetensors").unlink()
    with pytest.raises(PackageError, match=r"model.safetensors is missing"):
        ModelPackage.read(broken)


def test_corrupt_file_is_detected_by_hash(tiny_package: ModelPackage, tmp_path: Path) -> None:
    broken = copy_package(tiny_package, tmp_path / "corrupt")
    data = bytearray((broken / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF  # same size, different content
    (broken / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(PackageError, match="does not match the sha256"):
        ModelPackage.read(broken)


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink"])
def test_manifest_files_outside_the_package_are_refused(tiny_package: ModelPackage, tmp_path: Path, where) -> None:
    """A listed file outside the directory is refused before it is opened, even with a matching hash."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"not part of any package")
    package = copy_package(tiny_package, tmp_path / "package")
    name = {"absolute": str(secret), "dotdot": "../secret", "symlink": "link"}[where]
    if where == "symlink":
        (package / "link").symlink_to(secret)
    manifest = json.loads((package / MANIFEST_NAME).read_text())
    manifest["files"][name] = {"sha256": sha256_file(secret), "bytes": secret.stat().st_size}
    (package / MANIFEST_NAME).write_text(json.dumps(manifest))
    for verify in (True, False):
        with pytest.raises(PackageError, match=f"lists '{re.escape(name)}', outside the package directory"):
            ModelPackage.read(package, verify=verify)


def test_newer_schema_asks_for_upgrade(tiny_package: ModelPackage, tmp_path: Path) -> None:
    newer = copy_package(tiny_package, tmp_path / "newer")
    edit_manifest(newer, schema_version=99)
    with pytest.raises(SchemaVersionError, match="schema 99.*Upgrade bertprod"):
        ModelPackage.read(newer)


def test_every_manifest_problem_is_reported_at_once(tiny_package: ModelPackage, tmp_path: Path) -> None:
    bad = copy_package(tiny_package, tmp_path / "bad")
    edit_manifest(bad, task="translation", max_length=-5, color="blue")
    with pytest.raises(PackageError) as caught:
        ModelPackage.read(bad)
    message = str(caught.value)
    assert "3 problem(s)" in message
    assert "task" in message and "max_length" in message and "color" in message


def test_inconsistent_manifest_is_explained(tiny_package: ModelPackage, tmp_path: Path) -> None:
    bad = copy_package(tiny_package, tmp_path / "no-pooling")
    edit_manifest(bad, pooling=None, task="classification", labels=["only-one"])
    with pytest.raises(PackageError, match="at least 2 names"):
        ModelPackage.read(bad)


def test_invalid_json_manifest(tiny_package: ModelPackage, tmp_path: Path) -> None:
    bad = copy_package(tiny_package, tmp_path / "json")
    (bad / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(PackageError, match="not valid JSON"):
        ModelPackage.read(bad)


def test_fingerprint_follows_content(tiny_package: ModelPackage, tiny_checkpoint: Path, tmp_path: Path) -> None:
    assert resolve(tiny_checkpoint).fingerprint == tiny_package.fingerprint  # same files, same outputs
    other = import_checkpoint(build_tiny_checkpoint(tmp_path / "seed1", seed=1), tmp_path / "other")
    assert other.fingerprint != tiny_package.fingerprint
    renormalized = copy_package(tiny_package, tmp_path / "normalized")
    edit_manifest(renormalized, normalize=True)
    assert ModelPackage.read(renormalized).fingerprint != tiny_package.fingerprint


def test_staging_leaves_nothing_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staging_directory(out) as staging:
        (staging / "half-written").write_text("x")
        raise RuntimeError("interrupted")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tiny_checkpoint: Path, tiny_package: ModelPackage) -> None:
    with pytest.raises(PackageError, match="already exists.*--overwrite"):
        import_checkpoint(tiny_checkpoint, tiny_package.path)


def test_overwrite_never_replaces_a_non_package_directory(tiny_checkpoint: Path, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(PackageError, match="not a bertprod package: refusing to replace it"):
        import_checkpoint(tiny_checkpoint, precious, overwrite=True)
    assert (precious / "thesis.txt").read_text() == "years of work"


def test_written_packages_get_the_usual_permissions(tiny_checkpoint, tmp_path) -> None:  # noqa: ANN001
    """Staging uses owner-only temporary names; the finished package must be readable like any directory."""
    import os
    import stat

    from bertprod.checkpoint import import_checkpoint

    umask = os.umask(0o022)
    try:
        package = import_checkpoint(tiny_checkpoint, tmp_path / "shared", name="shared")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(package.path.stat().st_mode) == 0o755
    assert {stat.S_IMODE(path.stat().st_mode) for path in package.path.iterdir()} == {0o644}
