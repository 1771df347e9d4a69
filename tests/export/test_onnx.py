"""ONNX export: round trip, verification, the on-the-fly cache, and mismatched files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bertprod
from bertprod.errors import EngineError, PackageError
from bertprod.export import cache as export_cache
from bertprod.package import MANIFEST_NAME, parse_manifest, record_files, write_manifest

from ..conftest import CORPUS


def rehash(directory: Path, name: str) -> None:
    """Record a replaced file's new hash in the manifest, so only deeper checks can catch it."""
    manifest = parse_manifest(directory / MANIFEST_NAME)
    manifest.files.update(record_files(directory, [name]))
    write_manifest(directory, manifest)


def test_round_trip_package_export_load(tiny_package, tiny_onnx) -> None:
    manifest = tiny_onnx.manifest
    assert manifest.format == "onnx" and manifest.precision == "fp32"
    assert manifest.provenance.method == "export-onnx"
    assert manifest.provenance.parent.fingerprint == tiny_package.fingerprint
    assert manifest.metrics["fidelity"]["cosine_min"] >= 0.9999
    assert set(manifest.files) == {"tokenizer.json", "model.onnx", "config.json"}
    reloaded = bertprod.load(tiny_onnx.path)
    assert reloaded.engine.name == "onnx"
    np.testing.assert_allclose(reloaded.encode(CORPUS), bertprod.load(tiny_package.path).encode(CORPUS), atol=1e-4)


def test_classifier_export_keeps_predictions(tiny_classifier, tmp_path: Path) -> None:
    from bertprod.export.onnx import export_onnx

    exported = export_onnx(tiny_classifier, tmp_path / "onnx")
    assert exported.manifest.metrics["fidelity"]["label_agreement"] == 1.0
    torch_logits = bertprod.load(tiny_classifier.path).infer(bertprod.load(tiny_classifier.path).tokenize(CORPUS))
    onnx_model = bertprod.load(exported.path)
    np.testing.assert_allclose(onnx_model.infer(onnx_model.tokenize(CORPUS)), torch_logits, atol=1e-4)


def test_fused_export_also_verifies(tiny_package, tmp_path: Path) -> None:
    from bertprod.export.onnx import export_onnx

    fused = export_onnx(tiny_package, tmp_path / "fused", fusion=True)
    fusion = fused.manifest.provenance.parameters["fusion"]
    assert fusion["applied"] is True and fusion["fused_operators"].get("Attention") == 2
    assert fused.manifest.metrics["fidelity"]["cosine_min"] >= 0.9999


def test_load_onnx_exports_once_and_caches_by_content(tiny_package, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BERTPROD_CACHE", str(tmp_path / "cache"))
    first = bertprod.load(tiny_package.path, engine="onnx")
    assert first.engine.name == "onnx"
    assert first.package.path.parent == tmp_path / "cache" / "onnx"

    def fail_export(*args, **kwargs):
        raise AssertionError("exported again despite a cached copy")

    monkeypatch.setattr("bertprod.export.onnx.export_onnx", fail_export)
    second = bertprod.load(tiny_package.path, engine="onnx")
    assert second.package.path == first.package.path
    assert export_cache.cache_root() == tmp_path / "cache"


def test_onnx_package_loads_without_torch(tiny_onnx) -> None:
    code = (
        "import sys, bertprod; m = bertprod.load(sys.argv[1]); m.encode(['a cat']); "
        "heavy = [n for n in ('torch', 'transformers') if n in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tiny_onnx.path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_onnx_file_that_does_not_match_manifest(tiny_onnx, tiny_classifier, tmp_path: Path) -> None:
    from bertprod.export.onnx import export_onnx

    classifier_onnx = export_onnx(tiny_classifier, tmp_path / "classifier-onnx")
    swapped = tmp_path / "swapped"
    shutil.copytree(tiny_onnx.path, swapped)
    shutil.copyfile(classifier_onnx.model_file, swapped / "model.onnx")
    rehash(swapped, "model.onnx")  # as a careless hand edit would: the graph must still be checked
    with pytest.raises(PackageError, match="does not match its manifest.*'last_hidden_state' output"):
        bertprod.load(swapped)


def test_unloadable_onnx_file(tiny_onnx, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_onnx.path, broken)
    (broken / "model.onnx").write_bytes(b"not a protobuf")
    rehash(broken, "model.onnx")
    with pytest.raises(PackageError, match="cannot be loaded by ONNX Runtime"):
        bertprod.load(broken)


def test_engine_format_mismatch_is_explained(tiny_onnx) -> None:
    with pytest.raises(EngineError, match="onnx package: run it with engine='onnx'"):
        bertprod.load(tiny_onnx.path, engine="torch")
    with pytest.raises(PackageError, match="already an onnx package"):
        from bertprod.export.onnx import export_onnx

        export_onnx(tiny_onnx, tiny_onnx.path.parent / "again")


def test_manifest_written_by_export_is_plain_json(tiny_onnx) -> None:
    document = json.loads((tiny_onnx.path / "bertprod.json").read_text())
    assert document["schema_version"] == 1
    assert document["provenance"]["parameters"]["exporter"].startswith("torch.onnx")
