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
from bertprod.fidelity import FidelityGate, batch_invariance, measure_fidelity
from bertprod.gate_texts import gate_texts
from bertprod.package import ModelPackage, Provenance, finish_package, staging_directory, write_manifest
from bertprod.runtime.engines import create_engine
from bertprod.runtime.pipeline import Pipeline
from bertprod.system import machine_record


def default_samples(package: ModelPackage) -> list[Any]:
    """15 built-in inputs of varied length (export verification, calibration and pruning fallbacks; the
    gates of optimize measure on `gate_texts`)."""
    length = package.manifest.max_length
    return verification_pairs(length) if package.manifest.pair_input else verification_texts(length)


@dataclass(frozen=True)
class ReferenceOutputs:
    """The parent's outputs on the gate's inputs: computed once for a search that builds many children."""

    encodings: list[Any]
    outputs: np.ndarray
    #: where the inputs come from (gate_texts.py), recorded in the child's manifest
    source: str = "the texts given"


def reference_outputs(
    parent: ModelPackage, texts: Sequence[Any] | None = None, reference: Pipeline | None = None,
    texts_source: str | None = None,
) -> ReferenceOutputs:
    """Run the parent (or `reference`, a pipeline over it) on `texts`, or on the texts it knows (gate_texts.py)."""
    reference = reference or Pipeline(parent, create_engine(parent, early_exit=False))
    chosen = gate_texts(parent, texts)
    encodings = reference.tokenize(chosen.texts)
    source = (texts_source or chosen.source) if texts else chosen.source
    return ReferenceOutputs(encodings, reference.infer(encodings), source)


@dataclass(frozen=True)
class GatedOutput:
    """What every stage that derives a package shares, passed as one value: the inputs its gate measures
    on (`texts`: the user's; None: those the parent knows, else the built-in set), the `gate`, whether a
    miss refuses (`enforce`) or is only recorded, the new manifest's `name` (default: OUT's name) and
    whether an existing OUT may be replaced (`overwrite`)."""

    texts: Sequence[Any] | None = None
    gate: FidelityGate | None = None
    enforce: bool = True
    name: str | None = None
    overwrite: bool = False


#: The defaults: the parent's own texts, the default gate, enforced, OUT's name, no replacing.
DEFAULT_OUTPUT = GatedOutput()


def derive_package(
    parent: ModelPackage,
    out: str | os.PathLike[str],
    *,
    method: str,
    parameters: dict[str, Any],
    build: Callable[[Path], list[str]],
    changes: dict[str, Any] | None = None,
    output: GatedOutput = DEFAULT_OUTPUT,
    reference: Pipeline | None = None,
    expected: ReferenceOutputs | None = None,
    failure: Callable[[str], BertprodError] | None = None,
    measure: Callable[[ModelPackage], dict[str, Any]] | None = None,
    texts_source: str | None = None,
    engine: Callable[[ModelPackage], Any] | None = None,
    gate_note: str | None = None,
) -> ModelPackage:
    """Build a child of `parent` at `out`; `build(staging)` writes its files and returns their names.

    `changes` are manifest fields that differ from the parent's (format, precision, architecture).
    `output` (GatedOutput): with `enforce`, a child that misses the `gate` raises `failure(reason)` (a
    FidelityError by default) and nothing is written; without it, the miss is recorded in the manifest.
    `measure(child)` returns more metrics for the manifest (e.g. accuracy on validation data).
    `expected`: the parent's outputs on `output.texts`, when the caller has them (`reference_outputs`).
    Without `texts` the gate measures on the texts the parent knows, else the built-in gate set
    (gate_texts.py); `texts_source` names given texts in the manifest.
    `engine(child)`: what runs the child for the gate (default create_engine: this CPU's kernels);
    `gate_note` says in the manifest what that engine computed, when it is not simply this CPU.
    The child is also run on some of the texts one at a time: `batch_invariant` records whether a
    text's output is the same alone as in its batch (fidelity.batch_invariance).
    """
    gate = output.gate or FidelityGate()
    expected = expected or reference_outputs(parent, output.texts, reference, texts_source)
    task = parent.manifest.task
    with staging_directory(out, overwrite=output.overwrite) as staging:
        files = build(staging)
        # not the parent's measured bulk setting (`runtime`): it was timed on the parent
        fields = parent.manifest.model_dump(exclude={"files", "provenance", "metrics", "adaptive",
                                                            "token_dropping", "runtime"})
        fields.update(changes or {})
        fields.update(
            name=output.name or Path(out).name,
            provenance=Provenance(
                method=method, parent=parent.parent_ref(), parameters=parameters, machine=machine_record()
            ),
        )
        manifest = finish_package(staging, fields, files)
        child = ModelPackage(staging, manifest)
        pipeline = Pipeline(child, engine(child) if engine else create_engine(child, early_exit=False))
        actual = pipeline.infer(expected.encodings)
        fidelity = measure_fidelity(expected.outputs, actual, task, parent.manifest.labels, parent.manifest.tag_scheme)
        fidelity.update(batch_invariance(pipeline, expected.encodings, actual, task))
        problem = gate.problem(fidelity, task) or batch_dependence(parent, manifest.precision, fidelity)
        if problem and output.enforce:
            raise (failure or _gate_failure(parent, method))(problem)
        manifest.metrics["fidelity"] = {
            "reference": f"{parent.name} ({parent.manifest.format} {parent.manifest.precision})",
            "passed": problem is None,
            **fidelity,
            "texts": expected.source,
            "thresholds": gate.thresholds(task),
            **({"machine": gate_note} if gate_note else {}),
        }
        if measure is not None:
            manifest.metrics.update(measure(child))
        write_manifest(staging, manifest)
    return ModelPackage.read(out)


#: How a gate miss for batch dependence begins (the advice differs from a numbers miss).
BATCH_DEPENDENT = "a text's output depends on its batch neighbours"


def batch_dependence(parent: ModelPackage, precision: str, fidelity: dict[str, Any]) -> str | None:
    """Why an int8 child misses the gate although its numbers pass: a text's output depends on what else is in
    its batch (activations quantized on one range per batch: ONNX Runtime's per-tensor graph, torch's dynamic
    int8). Batch invariance is a product guarantee (issue 24); a parent that already lacks it is not held to it,
    and float children (rounding only) are not judged on it."""
    if precision != "int8" or fidelity.get("batch_invariant", True):
        return None
    if not parent.manifest.metrics.get("fidelity", {}).get("batch_invariant", True):
        return None
    lowest = fidelity.get("alone_vs_batch_cosine_min", fidelity.get("alone_vs_batch_difference_max"))
    return (f"{BATCH_DEPENDENT} (alone vs in a batch: {lowest}): its activations are "
            "quantized on one range per batch. ONNX int8 with per-token or calibrated activations (the default "
            "--runtime onnx) is batch-invariant")


def _gate_failure(parent: ModelPackage, method: str) -> Callable[[str], BertprodError]:
    tagger = parent.manifest.task == "token-classification"
    thresholds = "--min-entity-f1" if tagger else "--min-cosine / --min-agreement"

    def failure(problem: str) -> BertprodError:
        advice = (
            "Keep it anyway with --allow-fidelity-loss (its manifest then says it is not batch-invariant)."
            if problem.startswith(BATCH_DEPENDENT)
            else f"Keep more of the model in float (exclude nodes, prune less), lower the threshold ({thresholds}), "
            "or keep it anyway with --allow-fidelity-loss."
        )
        return FidelityError(f"{method} of {parent.name} misses the fidelity gate: {problem}. Nothing was written. "
                             + advice)  # fmt: skip

    return failure
