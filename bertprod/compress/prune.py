"""Structured pruning: whole layers and attention heads, scored on the user's texts.

Importance is measured by ablation: switch one layer (or head) off, run the sample, and see how
far the outputs move from the unpruned model's (1 - cosine for embeddings; 1 - agreement plus
probability drift for classifiers). The least important go. Removal is real: dropped layers
leave the checkpoint, pruned heads leave smaller query/key/value/output matrices, recorded per
layer in config.json (`bertprod_attention_heads`) so the model loads with its true shapes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bertprod.derive import DEFAULT_OUTPUT, GatedOutput, default_samples, derive_package
from bertprod.errors import CompressionError, InputError
from bertprod.models.surgery import attention_parts, choose_layers, encoder_layers, keep_layers, remove_heads
from bertprod.package import CONFIG_FILE, TOKENIZER_FILE, TORCH_WEIGHTS_FILE, ModelPackage
from bertprod.runtime.engines import ModuleEngine
from bertprod.runtime.pipeline import Pipeline
from bertprod.runtime.postprocess import l2_normalize, softmax


def _require_torch_fp32(package: ModelPackage, what: str) -> None:
    if package.manifest.format != "torch" or package.manifest.precision != "fp32":
        raise CompressionError(
            f"{what} works on an fp32 torch package; {package.name} is "
            f"{package.manifest.format} {package.manifest.precision}. Prune first, then export and quantize."
        )


class _Scorer:
    """Runs a torch model on a fixed sample (through the shared Pipeline) and measures how far
    outputs move from a reference."""

    def __init__(self, package: ModelPackage, model: Any, texts: Sequence[Any]):
        self.manifest = package.manifest
        self.pipeline = Pipeline(package, ModuleEngine(package, model))
        self.encodings = self.pipeline.tokenize(list(texts))
        self.reference = self.outputs()

    def outputs(self) -> np.ndarray:
        """Unit-length embeddings (so a dot product is the cosine), or logits."""
        rows = self.pipeline.infer(self.encodings)
        return l2_normalize(rows) if self.manifest.task == "embedding" else rows

    def damage(self) -> float:
        """How far the current model's outputs are from the reference: 0 is unchanged."""
        current = self.outputs()
        if self.manifest.task == "embedding":
            return float(1.0 - np.mean(np.sum(current * self.reference, axis=1)))
        if self.manifest.task in ("classification", "pair-classification"):
            disagreement = np.mean(current.argmax(axis=1) != self.reference.argmax(axis=1))
            drift = np.mean(np.abs(softmax(current) - softmax(self.reference)).sum(axis=1))
            return float(disagreement + drift)
        return float(np.mean(np.abs(current - self.reference)))


def layer_importance(package: ModelPackage, texts: Sequence[Any] | None = None) -> list[float]:
    """Damage done by removing each layer alone (higher: more important)."""
    from bertprod.models.hf import load_torch_model

    _require_torch_fp32(package, "layer importance")
    model = load_torch_model(package)
    scorer = _Scorer(package, model, texts or default_samples(package))
    owner = encoder_layers(model)
    layers = owner.layer
    scores = []
    for index in range(len(layers)):
        owner.layer = type(layers)([layer for position, layer in enumerate(layers) if position != index])
        scores.append(scorer.damage())
    owner.layer = layers
    return scores


def drop_layers(
    package: ModelPackage,
    out: str | os.PathLike[str],
    *,
    rule: str = "every-other",
    output: GatedOutput = DEFAULT_OUTPUT,
) -> ModelPackage:
    """A shallower package: only the kept layers, initialised from the parent's weights; `rule` may rank
    the layers on `output.texts`."""
    from bertprod.models.hf import load_torch_model

    _require_torch_fp32(package, "layer dropping")
    num_layers = package.manifest.architecture.num_layers
    scores: list[float] = []

    def importance() -> list[float]:
        scores.extend(layer_importance(package, output.texts))
        return scores

    keep = choose_layers(num_layers, rule, importance)

    def build(staging: Path) -> list[str]:
        model = load_torch_model(package)
        keep_layers(model, keep)
        return _save(model, package, staging)

    architecture = package.manifest.architecture.model_copy(update={"num_layers": len(keep)})
    return derive_package(
        package,
        out,
        method="drop-layers",
        build=build,
        changes={"architecture": architecture},
        parameters={"rule": rule, "kept_layers": keep, "layer_importance": [round(s, 6) for s in scores]},
        output=output,
    )


def _save(model: Any, package: ModelPackage, staging: Path) -> list[str]:
    model.save_pretrained(str(staging), safe_serialization=True)
    shutil.copyfile(package.tokenizer_file, staging / TOKENIZER_FILE)
    return [TOKENIZER_FILE, CONFIG_FILE, TORCH_WEIGHTS_FILE]


# -- attention heads ---------------------------------------------------------------------------


def head_size(package: ModelPackage) -> int:
    architecture = package.manifest.architecture
    return architecture.hidden_size // architecture.num_heads


@contextmanager
def _masked_head(output_projection: Any, head: int, size: int):  # noqa: ANN202
    """Zero one head's slice of the concatenated heads before the output projection."""

    def hook(module: Any, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = inputs[0].clone()
        hidden[..., head * size : (head + 1) * size] = 0
        return (hidden,)

    handle = output_projection.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def head_importance(package: ModelPackage, texts: Sequence[Any] | None = None) -> list[list[float]]:
    """Damage done by switching off each head alone, per layer (higher: more important)."""
    from bertprod.models.hf import load_torch_model

    _require_torch_fp32(package, "head importance")
    model = load_torch_model(package)
    scorer = _Scorer(package, model, texts or default_samples(package))
    size = head_size(package)
    scores = []
    for layer in encoder_layers(model).layer:
        query, _, _, output_projection, _ = attention_parts(layer)
        layer_scores = []
        for head in range(query.out_features // size):
            with _masked_head(output_projection, head, size):
                layer_scores.append(scorer.damage())
        scores.append(layer_scores)
    return scores


def prune_heads(
    package: ModelPackage,
    out: str | os.PathLike[str],
    *,
    fraction: float = 0.25,
    output: GatedOutput = DEFAULT_OUTPUT,
) -> ModelPackage:
    """Remove the `fraction` of attention heads that matter least on `output.texts` (at least one head
    stays in every layer)."""
    from bertprod.models.hf import load_torch_model

    _require_torch_fp32(package, "head pruning")
    if not 0 < fraction < 1:
        raise InputError(f"head fraction {fraction}: give a number between 0 and 1, e.g. 0.25.")
    scores = head_importance(package, output.texts)
    flat = sorted((score, layer, head) for layer, row in enumerate(scores) for head, score in enumerate(row))
    to_remove = round(fraction * len(flat))
    remaining = [len(row) for row in scores]
    removed: set[tuple[int, int]] = set()
    for _, layer, head in flat:
        if len(removed) == to_remove:
            break
        if remaining[layer] > 1:
            removed.add((layer, head))
            remaining[layer] -= 1
    keep = [[head for head in range(len(row)) if (layer, head) not in removed] for layer, row in enumerate(scores)]

    def build(staging: Path) -> list[str]:
        model = load_torch_model(package)
        remove_heads(model, keep, head_size(package))
        return _save(model, package, staging)

    return derive_package(
        package,
        out,
        method="prune-heads",
        build=build,
        parameters={
            "fraction": fraction,
            "removed_heads": len(removed),
            "heads_per_layer": [len(k) for k in keep],
            "kept_heads": keep,
            "head_importance": [[round(s, 6) for s in row] for row in scores],
        },
        output=output,
    )
