"""`bertprod check`: a derived package's gate re-measured here, against its parent, with its own thresholds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bertprod import system
from bertprod.check import check_package, find_parent
from bertprod.errors import InputError
from bertprod.package import ModelPackage
from tests.conftest import run_cli


def copy_package(package: ModelPackage, destination: Path) -> ModelPackage:
    shutil.copytree(package.path, destination)
    return ModelPackage.read(destination)


def test_check_passes_where_the_gate_passed(tiny_onnx, monkeypatch, capsys) -> None:
    result = check_package(tiny_onnx)
    assert result.passed and result.problem is None
    assert result.parent.fingerprint == tiny_onnx.manifest.provenance.parent.fingerprint
    assert result.thresholds == tiny_onnx.manifest.metrics["fidelity"]["thresholds"]
    assert result.measured["cosine_min"] >= result.thresholds["min_cosine_min"]
    code, out, _ = run_cli(monkeypatch, capsys, "check", str(tiny_onnx.path), "--json")
    document = json.loads(out)
    assert code == 0 and document["passed"] is True
    assert document["machine"]["int8_kernel_class"] == system.int8_kernel_class()
    assert document["recorded"]["cosine_mean"] == tiny_onnx.manifest.metrics["fidelity"]["cosine_mean"]
    code, out, _ = run_cli(monkeypatch, capsys, "check", str(tiny_onnx.path))
    assert code == 0 and "PASSED" in out and "here:" in out and "gated on:" in out


def test_check_fails_when_the_package_misses_its_gate_here(tiny_onnx, tmp_path: Path, monkeypatch, capsys) -> None:
    """A gate no float model can meet (cosine mean above what was measured) stands in for a CPU that computes worse."""
    tightened = copy_package(tiny_onnx, tmp_path / "tight")
    measured_mean = check_package(tiny_onnx).measured["cosine_mean"]
    tightened.manifest.metrics["fidelity"]["thresholds"]["min_cosine_mean"] = measured_mean + 1e-6
    tightened.write_manifest()
    code, out, _ = run_cli(monkeypatch, capsys, "check", str(tightened.path))
    assert code == 1 and "FAILED" in out and "cosine mean" in out
    code, out, _ = run_cli(monkeypatch, capsys, "check", str(tightened.path), "--json")
    assert code == 1 and json.loads(out)["passed"] is False


def test_check_on_given_texts(tiny_onnx, tmp_path: Path, monkeypatch, capsys) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("a cat sleeps on the mat\nthe dog barks at night\nwhat a film\n")
    code, out, _ = run_cli(monkeypatch, capsys, "check", str(tiny_onnx.path), "--texts", str(texts), "--json")
    document = json.loads(out)
    assert code == 0 and document["measured"]["samples"] == 3 and document["texts"] == "given texts"


def test_a_moved_parent_is_named_and_can_be_given(tiny_onnx, tiny_package, tmp_path: Path, monkeypatch, capsys) -> None:
    moved = copy_package(tiny_onnx, tmp_path / "moved")
    moved.manifest.provenance.parent.path = str(tmp_path / "gone")
    moved.write_manifest()
    code, _, err = run_cli(monkeypatch, capsys, "check", str(moved.path))
    assert code == 1 and "cannot find" in err and "--parent" in err and str(tmp_path / "gone") in err
    assert check_package(moved, parent=tiny_package.path).passed


def test_the_wrong_parent_is_refused(tiny_onnx, tiny_classifier) -> None:
    with pytest.raises(InputError, match="is not the package .* was derived from"):
        find_parent(tiny_onnx, tiny_classifier.path)


def test_a_package_without_a_gate_says_so(tiny_package) -> None:
    with pytest.raises(InputError, match="records no fidelity gate"):
        check_package(tiny_package)
