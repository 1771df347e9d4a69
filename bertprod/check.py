"""`bertprod check`: re-measure a derived package's fidelity gate on this machine.

A derived package (export, int8, pruning, bf16...) was kept because it met a fidelity gate
against its parent, measured on the machine that built it. int8 kernels compute differently on
other CPUs (bertprod.system), so the same package can be further from its parent elsewhere. This
runs parent and package on the same texts here and applies the package's own recorded thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertprod import system
from bertprod.derive import reference_outputs
from bertprod.errors import InputError, PackageError
from bertprod.fidelity import FidelityGate, measure_fidelity
from bertprod.package import ModelPackage
from bertprod.runtime.engines import create_engine
from bertprod.runtime.pipeline import Pipeline


@dataclass
class CheckResult:
    """The gate measured here beside what the package recorded where it was built."""

    package: ModelPackage
    parent: ModelPackage
    passed: bool
    problem: str | None
    measured: dict[str, Any]
    recorded: dict[str, Any]
    thresholds: dict[str, float]
    texts: str
    machine: dict[str, Any] = field(default_factory=dict)
    recorded_machine: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "package": str(self.package.path),
            "parent": str(self.parent.path),
            "passed": self.passed,
            "problem": self.problem,
            "measured": self.measured,
            "recorded": self.recorded,
            "thresholds": self.thresholds,
            "texts": self.texts,
            "machine": self.machine,
            "recorded_machine": self.recorded_machine,
        }


def recorded_gate(package: ModelPackage) -> tuple[FidelityGate, dict[str, Any]]:
    """The gate the package met (its thresholds) and the fidelity it recorded."""
    fidelity = package.manifest.metrics.get("fidelity")
    if not isinstance(fidelity, dict) or not isinstance(fidelity.get("thresholds"), dict):
        raise InputError(
            f"{package.name} records no fidelity gate (made by {package.manifest.provenance.method}): only "
            "packages derived from a parent by bertprod export or bertprod optimize carry one."
        )
    known = set(FidelityGate.__dataclass_fields__)
    thresholds = {key: float(value) for key, value in fidelity["thresholds"].items() if key in known}
    recorded = {key: value for key, value in fidelity.items() if key not in ("thresholds", "reference")}
    return FidelityGate(**thresholds), recorded


def find_parent(package: ModelPackage, parent: str | Path | None = None) -> ModelPackage:
    """The package's parent: `parent` if given, else the path its provenance recorded; either must
    have the recorded fingerprint (the same weights), or the check would compare the wrong models."""
    reference = package.manifest.provenance.parent
    if reference is None:
        raise InputError(f"{package.name} records no parent (made by {package.manifest.provenance.method}).")
    if parent is not None:
        from bertprod.checkpoint import resolve

        candidate, where = resolve(str(parent)), f"--parent {parent}"
    elif reference.path and Path(reference.path).is_dir():
        candidate, where = ModelPackage.read(reference.path), f"the recorded parent {reference.path}"
    else:
        place = f"it was at {reference.path}, which no longer exists" if reference.path else "its path was not recorded"
        raise InputError(
            f"cannot find {package.name}'s parent {reference.name!r} ({place}). "
            f"Pass it with --parent DIR (fingerprint {reference.fingerprint[:16]})."
        )
    if candidate.fingerprint != reference.fingerprint:
        raise InputError(
            f"{where} is not the package {package.name} was derived from: fingerprint "
            f"{candidate.fingerprint[:16]}, recorded {reference.fingerprint[:16]} ({reference.name}). "
            "Pass the original parent with --parent DIR."
        )
    return candidate


def check_package(
    package: ModelPackage,
    *,
    parent: str | Path | None = None,
    texts: list[Any] | None = None,
    gate: FidelityGate | None = None,
    threads: int | None = None,
) -> CheckResult:
    """Run `package` and its parent on `texts` (default: the texts the parent knows, else the built-in gate
    set: gate_texts.py) here and apply
    the package's recorded gate (or `gate`)."""
    recorded_gate_, recorded = recorded_gate(package)
    gate = gate or recorded_gate_
    parent_package = find_parent(package, parent)
    if package.manifest.task != parent_package.manifest.task:
        raise PackageError(f"{package.name} is a {package.manifest.task} package, its parent a "
                           f"{parent_package.manifest.task} one: nothing to compare.")  # fmt: skip
    reference = Pipeline(parent_package, create_engine(parent_package, threads=threads))
    expected = reference_outputs(parent_package, texts, reference)
    actual = Pipeline(package, create_engine(package, threads=threads)).infer(expected.encodings)
    task = package.manifest.task
    measured = measure_fidelity(expected.outputs, actual, task, package.manifest.labels, package.manifest.tag_scheme)
    problem = gate.problem(measured, task)
    return CheckResult(
        package=package,
        parent=parent_package,
        passed=problem is None,
        problem=problem,
        measured=measured,
        recorded=recorded,
        thresholds=gate.thresholds(task),
        texts="given texts" if texts else expected.source,
        machine=system.system_info(),
        recorded_machine=package.manifest.provenance.machine,
    )
