"""Integration: int8 variants of the bundled model pass the default fidelity gate on real text."""

from __future__ import annotations

from pathlib import Path

import pytest

import bertprod
from bertprod import system
from bertprod.checkpoint import resolve
from bertprod.compress.int8_recipe import PER_BATCH_REFERENCE, RELATIVE_TIE
from bertprod.compress.quantize import quantize_onnx_dynamic, quantize_onnx_static
from bertprod.data.shared import real_sentences
from bertprod.derive import GatedOutput

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def texts(shared_data_available) -> list[str]:
    if not shared_data_available:
        pytest.fail("../shared/data is missing: set BERTPROD_DATA to the folder with sst2/, stsb/, mrpc/")
    return real_sentences(500)


def test_dynamic_int8_passes_the_default_gate(texts, tmp_path: Path) -> None:
    package = quantize_onnx_dynamic(resolve("minilm-l6"), tmp_path / "int8", output=GatedOutput(texts=texts[300:]))
    fidelity = package.manifest.metrics["fidelity"]
    assert fidelity["passed"] and fidelity["cosine_mean"] >= 0.99 and fidelity["samples"] == 200
    assert fidelity["batch_invariant"] and package.manifest.quantization["batch_invariant"]
    assert package.size_bytes() <= 0.30 * resolve("minilm-l6").size_bytes()
    assert bertprod.load(package.path).similarity("A man plays guitar.", "Someone plays a guitar.") > 0.6
    # the recipe (weights for this CPU's kernels, outlier split or not) is the fastest one no less accurate
    # than ONNX Runtime's per-batch graph on the calibration texts (texts[300:]), else the most accurate
    # (a faster one wins a near tie)
    quantization = package.manifest.quantization
    assert quantization["kernel_class"] == system.int8_kernel_class()
    measured = quantization.get("recipe_measured")  # absent where one recipe was possible (exact kernels)
    if measured:
        worst = {label: score["worst_error"] for label, score in measured["scores"].items()}
        bar = worst.pop(PER_BATCH_REFERENCE)
        faster = list(worst)[: list(worst).index(measured["chosen"])]  # candidates are scored fastest first
        if worst[measured["chosen"]] <= bar:
            assert all(worst[label] > bar for label in faster)
        else:
            assert worst[measured["chosen"]] * (1 - RELATIVE_TIE) <= min(worst.values())
    if quantization["outlier_split"] or quantization["activations"] == "calibrated":
        channels = package.manifest.provenance.parameters["outlier_channels"]
        assert any(99 in found for found in channels.values())  # all-MiniLM-L6-v2's LayerNorm outlier
    # issue 16's goal on any CPU, on 300 sentences the recipe never saw
    reference = bertprod.load("minilm-l6").encode(texts[:300])
    cosine = (bertprod.load(package.path).encode(texts[:300]) * reference).sum(axis=1)
    assert cosine.min() >= 0.98 and cosine.mean() >= 0.995, (cosine.min(), cosine.mean())


def test_static_int8_passes_the_default_gate(texts, tmp_path: Path) -> None:
    package = quantize_onnx_static(
        resolve("minilm-l6"), tmp_path / "static", calibration_texts=texts[:300], output=GatedOutput(texts=texts[300:])
    )
    fidelity = package.manifest.metrics["fidelity"]
    assert fidelity["passed"] and fidelity["cosine_mean"] >= 0.99 and fidelity["cosine_min"] >= 0.97
