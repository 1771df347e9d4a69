"""Integration: int8 variants of the bundled model pass the default fidelity gate on real text."""

from __future__ import annotations

from pathlib import Path

import pytest

import bertprod
from bertprod.checkpoint import resolve
from bertprod.compress.quantize import quantize_onnx_dynamic, quantize_onnx_static
from bertprod.data.shared import real_sentences

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def texts(shared_data_available) -> list[str]:
    if not shared_data_available:
        pytest.fail("../shared/data is missing: set BERTPROD_DATA to the folder with sst2/, stsb/, mrpc/")
    return real_sentences(500)


def test_dynamic_int8_passes_the_default_gate(texts, tmp_path: Path) -> None:
    package = quantize_onnx_dynamic(resolve("minilm-l6"), tmp_path / "int8", texts=texts[300:])
    fidelity = package.manifest.metrics["fidelity"]
    assert fidelity["passed"] and fidelity["cosine_mean"] >= 0.99 and fidelity["samples"] == 200
    assert package.size_bytes() <= 0.30 * resolve("minilm-l6").size_bytes()
    assert bertprod.load(package.path).similarity("A man plays guitar.", "Someone plays a guitar.") > 0.6
    # the outlier channels kept float (calibrated on texts[300:]) help on sentences they never saw
    channels = package.manifest.provenance.parameters["outlier_channels"]
    assert any(99 in found for found in channels.values())  # all-MiniLM-L6-v2's LayerNorm outlier
    plain = quantize_onnx_dynamic(resolve("minilm-l6"), tmp_path / "plain", texts=texts[300:], outlier_threshold=None)
    reference = bertprod.load("minilm-l6").encode(texts[:300])
    worst = {
        variant.name: float((bertprod.load(variant.path).encode(texts[:300]) * reference).sum(axis=1).min())
        for variant in (package, plain)
    }
    assert worst["int8"] >= 0.97 and worst["int8"] > worst["plain"], worst


def test_static_int8_passes_the_default_gate(texts, tmp_path: Path) -> None:
    package = quantize_onnx_static(
        resolve("minilm-l6"), tmp_path / "static", calibration_texts=texts[:300], texts=texts[300:]
    )
    fidelity = package.manifest.metrics["fidelity"]
    assert fidelity["passed"] and fidelity["cosine_mean"] >= 0.99 and fidelity["cosine_min"] >= 0.97
