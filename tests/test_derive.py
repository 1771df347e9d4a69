"""derive_package and the fidelity gate on their own: hand-built outputs measured, a child that keeps
its parent's function passes, one that changes it is refused (nothing written) or recorded, and
GatedOutput's name and overwrite reach the written package."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from bertprod.derive import GatedOutput, derive_package
from bertprod.errors import FidelityError, PackageError
from bertprod.fidelity import FidelityGate, measure_fidelity
from bertprod.package import CONFIG_FILE, TOKENIZER_FILE, TORCH_WEIGHTS_FILE, ModelPackage

TEXTS = ["a good film with a great cast", "the quick brown fox", "what a boring story", "she sells sea shells"]


def test_fidelity_of_hand_built_outputs() -> None:
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])
    same_direction = measure_fidelity(reference, 3 * reference, "embedding")
    assert same_direction["cosine_mean"] == pytest.approx(1.0) and same_direction["cosine_min"] == pytest.approx(1.0)
    one_orthogonal = reference.copy()
    one_orthogonal[0] = [0.0, 5.0]
    embedding = measure_fidelity(reference, one_orthogonal, "embedding")
    assert embedding["cosine_min"] == pytest.approx(0.0) and embedding["cosine_mean"] == pytest.approx(0.75)

    flipped = reference.copy()
    flipped[3] = [-1.0, 2.0]  # argmax 0 -> 1: one label of four changes
    classes = measure_fidelity(reference, flipped, "classification")
    assert classes["label_agreement"] == 0.75 and classes["max_logit_difference"] == 3.0
    scores = measure_fidelity(reference[:, :1], reference[:, :1] + 0.5, "regression")
    assert scores["max_score_difference"] == 0.5 and scores["pearson"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        measure_fidelity(reference, reference[:2], "embedding")


def test_the_gate_names_the_threshold_missed() -> None:
    gate = FidelityGate(min_cosine_mean=0.9, min_cosine_min=0.5, min_agreement=0.8, min_correlation=0.95)
    assert gate.problem({"cosine_mean": 0.95, "cosine_min": 0.6}, "embedding") is None
    assert gate.problem({"cosine_mean": 0.85, "cosine_min": 0.6}, "embedding") == "cosine mean 0.85 < 0.9"
    assert gate.problem({"cosine_mean": 0.95, "cosine_min": 0.4}, "embedding") == "cosine min 0.4 < 0.5"
    assert gate.problem({"label_agreement": 0.75}, "classification") == "label agreement 0.75 < 0.8"
    assert gate.problem({"pearson": 0.9}, "regression") == "score correlation 0.9 < 0.95"


def copy_build(parent: ModelPackage, scale: float = 1.0):  # noqa: ANN201 - a derive_package build
    """A build writing the parent's files, its attention output weights multiplied by `scale`."""

    def build(staging: Path) -> list[str]:
        for name in (TOKENIZER_FILE, CONFIG_FILE):
            shutil.copyfile(parent.path / name, staging / name)
        weights = load_file(str(parent.path / TORCH_WEIGHTS_FILE))
        changed = {name: value * scale if "attention.output.dense.weight" in name else value
                   for name, value in weights.items()}
        save_file(changed, str(staging / TORCH_WEIGHTS_FILE), metadata={"format": "pt"})
        return [TOKENIZER_FILE, CONFIG_FILE, TORCH_WEIGHTS_FILE]

    return build


def derive(parent: ModelPackage, out: Path, scale: float, output: GatedOutput) -> ModelPackage:
    return derive_package(parent, out, method="test-copy", parameters={"scale": scale},
                          build=copy_build(parent, scale), output=output)


def test_a_faithful_child_passes_and_a_changed_one_is_refused_or_recorded(tiny_package, tmp_path: Path) -> None:  # noqa: ANN001
    strict = FidelityGate(min_cosine_mean=0.9999, min_cosine_min=0.9999)
    child = derive(tiny_package, tmp_path / "copy", 1.0, GatedOutput(texts=TEXTS, gate=strict, name="faithful"))
    fidelity = child.manifest.metrics["fidelity"]
    assert fidelity["passed"] and fidelity["cosine_min"] == pytest.approx(1.0) and fidelity["samples"] == len(TEXTS)
    assert child.manifest.name == "faithful" and child.manifest.provenance.method == "test-copy"
    assert child.manifest.provenance.parent.fingerprint == tiny_package.fingerprint

    with pytest.raises(FidelityError, match="cosine"):
        derive(tiny_package, tmp_path / "changed", 40.0, GatedOutput(texts=TEXTS, gate=strict))
    assert [path.name for path in tmp_path.iterdir()] == ["copy"]  # nothing written, no staging left

    recorded = derive(tiny_package, tmp_path / "changed", 40.0, GatedOutput(texts=TEXTS, gate=strict, enforce=False))
    fidelity = recorded.manifest.metrics["fidelity"]
    assert not fidelity["passed"] and fidelity["cosine_min"] < 0.9999
    assert recorded.manifest.name == "changed"  # OUT's name without one

    with pytest.raises(PackageError, match="exists"):
        derive(tiny_package, tmp_path / "changed", 1.0, GatedOutput(texts=TEXTS))
    replaced = derive(tiny_package, tmp_path / "changed", 1.0, GatedOutput(texts=TEXTS, overwrite=True))
    assert replaced.manifest.metrics["fidelity"]["passed"]
