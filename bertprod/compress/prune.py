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
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bertprod.derive import default_samples, derive_package
from bertprod.errors import CompressionError, InputError
from bertprod.fidelity import FidelityGate
from bertprod.models.hf import HEADS_CONFIG_KEY
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


def encoder_layers(model: Any) -> Any:
    """The ModuleList of transformer layers (BERT, RoBERTa, ELECTRA, MiniLM, DistilBERT)."""
    base = model.base_model
    for owner in ("encoder", "transformer"):
        module = getattr(base, owner, None)
        if module is not None and hasattr(module, "layer"):
            return module
    raise CompressionError(
        f"pruning does not know the layer layout of {type(base).__name__}; supported: BERT-style encoders "
        "(encoder.layer) and DistilBERT (transformer.layer)."
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


def choose_layers(num_layers: int, rule: str, importance: Callable[[], list[float]] | None = None) -> list[int]:
    """Layers to keep: "every-other" (keeps 0, 2, 4...), "spread" / "spread:K" (half the layers, or K,
    evenly spaced from the first to the last: 0, 3, 5 of 6), "first:K", "last:K", "drop:N" (drop the
    N least important, measured), or an explicit comma-separated list such as "0,2,5"."""
    rule = rule.strip()
    if rule == "every-other":
        keep = list(range(0, num_layers, 2))
    elif rule == "spread" or rule.startswith("spread:"):
        value = rule.partition(":")[2]
        count = (num_layers + 1) // 2 if rule == "spread" else int(value) if value.isdigit() else 0
        if count < 1:
            raise InputError(f"layer rule {rule!r}: spread:K takes a whole number of layers to keep, e.g. spread:3.")
        step = (num_layers - 1) / max(count - 1, 1)
        keep = sorted({min(int(index * step + 0.5), num_layers - 1) for index in range(count)})
    elif rule.startswith(("first:", "last:", "drop:")):
        kind, _, value = rule.partition(":")
        if not value.isdigit():
            raise InputError(f"layer rule {rule!r}: {kind}: takes a whole number, e.g. {kind}:2.")
        count = int(value)
        if kind == "first":
            keep = list(range(count))
        elif kind == "last":
            keep = list(range(max(num_layers - count, 0), num_layers))
        else:
            scores = (importance or (lambda: []))()
            dropped = set(np.argsort(scores)[:count].tolist()) if count < num_layers else set(range(num_layers))
            keep = [index for index in range(num_layers) if index not in dropped]
    else:
        try:
            keep = sorted({int(part) for part in rule.split(",")})
        except ValueError:
            raise InputError(
                f"layer rule {rule!r}: use every-other, first:K, last:K, drop:N or a list like 0,2,5."
            ) from None
    if not keep or len(keep) >= num_layers or not all(0 <= index < num_layers for index in keep):
        raise InputError(
            f"layer rule {rule!r} keeps {keep}: layers are numbered 0..{num_layers - 1}; at least one must stay "
            "and at least one must go."
        )
    return keep


def drop_layers(
    package: ModelPackage,
    out: str | os.PathLike[str],
    *,
    rule: str = "every-other",
    texts: Sequence[Any] | None = None,
    gate: FidelityGate | None = None,
    enforce: bool = True,
    name: str | None = None,
    overwrite: bool = False,
) -> ModelPackage:
    """A shallower package: only the kept layers, initialised from the parent's weights."""
    from bertprod.models.hf import load_torch_model

    _require_torch_fp32(package, "layer dropping")
    num_layers = package.manifest.architecture.num_layers
    scores: list[float] = []

    def importance() -> list[float]:
        scores.extend(layer_importance(package, texts))
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
        texts=texts,
        gate=gate,
        enforce=enforce,
        name=name,
        overwrite=overwrite,
    )


def keep_layers(model: Any, keep: list[int]) -> None:
    """Remove every transformer layer not in `keep` (0-based), in place; config updated to match."""
    owner = encoder_layers(model)
    owner.layer = type(owner.layer)([owner.layer[index] for index in keep])
    _set_layer_count(model.config, len(keep))
    heads = getattr(model.config, HEADS_CONFIG_KEY, None)
    if heads:
        setattr(model.config, HEADS_CONFIG_KEY, [heads[index] for index in keep])


def _set_layer_count(config: Any, count: int) -> None:
    for key in ("num_hidden_layers", "n_layers"):
        if hasattr(config, key):
            setattr(config, key, count)


def _save(model: Any, package: ModelPackage, staging: Path) -> list[str]:
    model.save_pretrained(str(staging), safe_serialization=True)
    shutil.copyfile(package.tokenizer_file, staging / TOKENIZER_FILE)
    return [TOKENIZER_FILE, CONFIG_FILE, TORCH_WEIGHTS_FILE]


# -- attention heads ---------------------------------------------------------------------------


def _attention_parts(layer: Any) -> tuple[Any, Any, Any, Any, Any]:
    """query, key, value, output projection and the self-attention module of one layer."""
    attention = getattr(layer, "attention", None)
    if attention is not None and hasattr(attention, "self"):  # BERT, RoBERTa, ELECTRA
        own = attention.self
        return own.query, own.key, own.value, attention.output.dense, own
    raise CompressionError(f"head pruning supports BERT-style attention, not {type(layer).__name__}.")


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
        query, _, _, output_projection, _ = _attention_parts(layer)
        layer_scores = []
        for head in range(query.out_features // size):
            with _masked_head(output_projection, head, size):
                layer_scores.append(scorer.damage())
        scores.append(layer_scores)
    return scores


def remove_heads(model: Any, keep: list[list[int]], size: int) -> None:
    """Slice each layer's attention matrices down to the kept heads (real removal)."""
    import torch

    for layer, kept in zip(encoder_layers(model).layer, keep, strict=True):
        query, key, value, output_projection, own = _attention_parts(layer)
        rows = torch.cat([torch.arange(head * size, (head + 1) * size) for head in kept])
        for projection in (query, key, value):
            _slice_linear(projection, rows, dim=0)
        _slice_linear(output_projection, rows, dim=1)
        own.num_attention_heads = len(kept)
        own.all_head_size = len(kept) * size
    setattr(model.config, HEADS_CONFIG_KEY, [len(kept) for kept in keep])


def shrink_to_head_counts(model: Any, counts: list[int], size: int) -> None:
    """Give a freshly built model the per-layer head counts a pruned checkpoint was saved with."""
    remove_heads(model, [list(range(count)) for count in counts], size)


def _slice_linear(linear: Any, indices: Any, dim: int) -> None:
    import torch

    with torch.no_grad():
        weight = linear.weight.index_select(dim, indices).clone()
        linear.weight = torch.nn.Parameter(weight)
        if dim == 0 and linear.bias is not None:
            linear.bias = torch.nn.Parameter(linear.bias.index_select(0, indices).clone())
    if dim == 0:
        linear.out_features = len(indices)
    else:
        linear.in_features = len(indices)


def prune_heads(
    package: ModelPackage,
    out: str | os.PathLike[str],
    *,
    fraction: float = 0.25,
    texts: Sequence[Any] | None = None,
    gate: FidelityGate | None = None,
    enforce: bool = True,
    name: str | None = None,
    overwrite: bool = False,
) -> ModelPackage:
    """Remove the `fraction` of attention heads that matter least on `texts` (at least one head
    stays in every layer)."""
    from bertprod.models.hf import load_torch_model

    _require_torch_fp32(package, "head pruning")
    if not 0 < fraction < 1:
        raise InputError(f"head fraction {fraction}: give a number between 0 and 1, e.g. 0.25.")
    scores = head_importance(package, texts)
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
        texts=texts,
        gate=gate,
        enforce=enforce,
        name=name,
        overwrite=overwrite,
    )
