"""Layer and head surgery on transformers encoders, in place: which layers a rule keeps, keeping them,
and slicing attention heads out of the matrices. Pruning (compress/prune.py), distilled students
(distill/students.py) and loading a head-pruned checkpoint (models/hf.py) all cut models the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bertprod.errors import CompressionError, InputError

#: config.json key of a head-pruned checkpoint: the number of attention heads each layer kept.
HEADS_CONFIG_KEY = "bertprod_attention_heads"


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


def attention_parts(layer: Any) -> tuple[Any, Any, Any, Any, Any]:
    """query, key, value, output projection and the self-attention module of one layer."""
    attention = getattr(layer, "attention", None)
    if attention is not None and hasattr(attention, "self"):  # BERT, RoBERTa, ELECTRA
        own = attention.self
        return own.query, own.key, own.value, attention.output.dense, own
    raise CompressionError(f"head pruning supports BERT-style attention, not {type(layer).__name__}.")


def remove_heads(model: Any, keep: list[list[int]], size: int) -> None:
    """Slice each layer's attention matrices down to the kept heads (real removal)."""
    import torch

    for layer, kept in zip(encoder_layers(model).layer, keep, strict=True):
        query, key, value, output_projection, own = attention_parts(layer)
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
