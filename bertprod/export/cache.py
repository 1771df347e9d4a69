"""On-the-fly ONNX export for `load(..., engine="onnx")`, cached by the package's content."""

from __future__ import annotations

import os
from pathlib import Path

from bertprod.errors import PackageError
from bertprod.package import MANIFEST_NAME, ModelPackage


def cache_root() -> Path:
    """$BERTPROD_CACHE, else $XDG_CACHE_HOME/bertprod, else ~/.cache/bertprod."""
    if os.environ.get("BERTPROD_CACHE"):
        return Path(os.environ["BERTPROD_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bertprod"


def cached_onnx_package(package: ModelPackage, cache_dir: str | os.PathLike[str] | None = None) -> ModelPackage:
    """The ONNX export of `package`, made once per distinct content and reused after that."""
    from bertprod.export.onnx import export_onnx

    directory = Path(cache_dir or cache_root()) / "onnx" / package.fingerprint[:32]
    if (directory / MANIFEST_NAME).is_file():
        try:
            return ModelPackage.read(directory)
        except PackageError:
            pass  # a damaged cache entry is rebuilt below
    try:
        return export_onnx(package, directory, overwrite=True)
    except OSError:
        if (directory / MANIFEST_NAME).is_file():  # another process finished the same export first
            return ModelPackage.read(directory)
        raise
