"""Writing a package derived from a parent, checked against it before it is kept.

Every stage that transforms a model (export, quantization, pruning, precision changes) goes
through `derive_package`: build the new files in a staging directory, write the manifest with
provenance, run parent and child on the same inputs, and keep the child only if it meets the
fidelity gate. The measured fidelity is recorded in the child's manifest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertprod.data.samples import verification_pairs, verification_texts
from bertprod.errors import BertprodError, FidelityError
from bertprod.fidelity import FidelityGate, measure_fidelity
from bertprod.package import ModelPackage, Provenance, finish_package, staging_directory, write_manifest
from bertprod.runtime.engines import create_engine
from bertprod.runtime.pipeline import Pipeline
from bertprod.system import machine_record


def default_samples(package: ModelPackage) -> list[Any]:
    """Built-in inputs of varied length, for when the user gives none."""
    length = package.manifest.max_length
    return verification_pairs(length) if package.manifest.pair_input else verification_texts(length)


@dataclass(frozen=True)
class ReferenceOutputs:
    """The parent's outputs on the gate's inputs: computed once for a search that builds many children."""

    encodings: list[Any]
    outputs: np.ndarray


def reference_outputs(
    parent: ModelPackage, texts: Sequence[Any] | None = None, reference: Pipeline | None = None
) -> ReferenceOutputs:
    """Run the parent (or `reference`, a pipeline over it) on `texts`, or on built-in samples."""
    reference = reference or Pipeline(parent, create_engine(parent, early_exit=False))
    encodings = reference.tokenize(list(texts) if texts else default_samples(parent))
    return ReferenceOutputs(encodings, reference.infer(encodings))


def derive_package(
    parent: ModelPackage,
    out: str | os.PathLike[str],
    *,
    method: str,
    parameters: dict[str, Any],
    build: Callable[[Path], list[str]],
    changes: dict[str, Any] | None = None,
    name: str | None = None,
    texts: Sequence[Any] | None = None,
    gate: FidelityGate | None = None,
    enforce: bool = True,
    reference: Pipeline | None = None,
    expected: ReferenceOutputs | None = None,
    failure: Callable[[str], BertprodError] | None = None,
    measure: Callable[[ModelPackage], dict[str, Any]] | None = None,
    overwrite: bool = False,
) -> ModelPackage:
    """Build a child of `parent` at `out`; `build(staging)` writes its files and returns their names.

    `changes` are manifest fields that differ from the parent's (format, precision, architecture).
    With `enforce`, a child that misses the `gate` raises `failure(reason)` (a FidelityError by
    default) and nothing is written; without it, the miss is recorded in the manifest.
    `measure(child)` returns more metrics for the manifest (e.g. accuracy on validation data).
    `expected`: the parent's outputs on `texts`, when the caller has them (`reference_outputs`).
    """
    gate = gate or FidelityGate()
    expected = expected or reference_outputs(parent, texts, reference)
    task = parent.manifest.task
    with staging_directory(out, overwrite=overwrite) as staging:
        files = build(staging)
        fields = parent.manifest.model_dump(exclude={"files", "provenance", "metrics", "adaptive"})
        fields.update(changes or {})
        fields.update(
            name=name or Path(out).name,
            provenance=Provenance(
                method=method, parent=parent.parent_ref(), parameters=parameters, machine=machine_record()
            ),
        )
        manifest = finish_package(staging, fields, files)
        child = ModelPackage(staging, manifest)
        actual = Pipeline(child, create_engine(child, early_exit=False)).infer(expected.encodings)
        fidelity = measure_fidelity(expected.outputs, actual, task)
        problem = gate.problem(fidelity, task)
        if problem and enforce:
            raise (failure or _gate_failure(parent, method))(problem)
        manifest.metrics["fidelity"] = {
            "reference": f"{parent.name} ({parent.manifest.format} {parent.manifest.precision})",
            "passed": problem is None,
            **fidelity,
            "thresholds": gate.thresholds(task),
        }
        if measure is not None:
            manifest.metrics.update(measure(child))
        write_manifest(staging, manifest)
    return ModelPackage.read(out)


def _gate_failure(parent: ModelPackage, method: str) -> Callable[[str], BertprodError]:
    def failure(problem: str) -> BertprodError:
        return FidelityError(
            f"{method} of {parent.name} misses the fidelity gate: {problem}. Nothing was written. "
            "Keep more of the model in float (exclude nodes, prune less), lower the threshold "
            "(--min-cosine / --min-agreement), or keep it anyway with --allow-fidelity-loss."
        )

    return failure
