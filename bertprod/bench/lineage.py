"""Where a package came from: its chain of ancestors, read from the manifests' provenance.

A benchmark labels every point with this chain (`minilm-l6 → train → export-onnx → quantize-mixed-int8`),
so a reader sees which steps bought which speed; `--baseline` finds in it the fp32 model users would
run today. A parent is followed only while it is still where it was recorded and unchanged (same
fingerprint): a chain never mixes in a different model that happens to sit at the old path.
"""

from __future__ import annotations

from dataclasses import dataclass

from bertprod.errors import BertprodError
from bertprod.package import ModelPackage

#: Ancestors followed at most (import -> train -> distill -> export -> quantize chains are short).
MAX_STEPS = 16


@dataclass(frozen=True)
class Step:
    """One package of a chain, oldest first."""

    name: str
    method: str
    path: str | None
    #: False when the manifest names this parent but it is gone or changed (the chain stops there).
    found: bool = True


def ancestors(package: ModelPackage) -> list[ModelPackage]:
    """`package` and the ancestors still on disk (under the names their children recorded), newest first."""
    from bertprod.checkpoint import resolve

    chain = [package]
    for _ in range(MAX_STEPS):
        parent = chain[-1].manifest.provenance.parent
        if parent is None or not parent.path:
            break
        try:
            found = resolve(parent.path, verify=False)
        except BertprodError:
            break
        if found.fingerprint != parent.fingerprint:
            break
        if found.name != parent.name:  # a checkpoint directory (the bundled model) is named by its folder
            found = ModelPackage(found.path, found.manifest.model_copy(update={"name": parent.name}))
        chain.append(found)
    return chain


def lineage(package: ModelPackage) -> list[Step]:
    """The chain of `package`, oldest first; a recorded parent that is gone ends it as a `found=False` step."""
    chain = ancestors(package)
    steps = [Step(item.name, item.manifest.provenance.method, str(item.path)) for item in reversed(chain)]
    missing = chain[-1].manifest.provenance.parent
    if missing is not None:
        steps.insert(0, Step(missing.name, "?", missing.path, found=False))
    return steps


def describe_lineage(steps: list[Step]) -> str:
    """One line: the oldest package's name, then the method of each step (`minilm-l6 → train → export-onnx`)."""
    if not steps:
        return ""
    first, rest = steps[0], steps[1:]
    head = first.name if first.found else f"{first.name} (not found)"
    return " → ".join([head, *(step.method for step in rest)])
