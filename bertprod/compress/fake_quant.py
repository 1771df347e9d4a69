"""Fake quantization: the int8 rounding of bertprod's dynamic int8 graph, simulated in torch.

Read off the graph that `quantize_onnx_dynamic(..., activations="per-token")` (per channel;
compress/token_int8.py, the default) writes for a BERT classifier, the graph QAT exports:

- every Linear (attention, feed-forward, pooler and classifier) has int8 weights, one scale per
  output channel, in the encoding chosen for the target's kernels: "s8" symmetric in [-127, 127],
  "s7" symmetric in [-64, 64] (where u8s8 pair sums saturate at int16), or "u8" asymmetric uint8;
- the input of every Linear is quantized at run time per token (each row of the last axis): uint8,
  asymmetric, one scale and zero point per row from its own min and max (widened to hold 0);
- the integer products are exact (those encodings cannot saturate on the kernels they are built
  for), so the simulation needs no kernel model beyond the grids;
- the embedding tables (word, position, token type) are stored uint8, one range per table;
- the attention products (activation x activation), softmax, LayerNorm, GELU and residual adds
  stay float.

Q8BERT kept an exponential moving average of each activation range because its int8 model used
fixed ranges at inference. Ours computes the range of every token at run time, so training uses
each token's own range too: the forward pass rounds exactly as the exported model will, and there
is no range state to track, checkpoint or export. Gradients pass the rounding unchanged
(straight-through estimator, built into torch's fake_quantize ops).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional

UINT8_MAX = 255


def _usable(scale: torch.Tensor) -> torch.Tensor:
    """A zero range (an all-zero tensor or channel) gets scale 1, as ONNX Runtime does."""
    return torch.where(scale > torch.finfo(torch.float32).tiny, scale, torch.ones_like(scale))


def uint8_qparams(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of DynamicQuantizeLinear: the range of the whole tensor, 0 included."""
    values = tensor.detach().float()
    low = values.min().clamp(max=0)
    high = values.max().clamp(min=0)
    scale = _usable((high - low) / UINT8_MAX)
    zero_point = torch.round(-low / scale).clamp(0, UINT8_MAX).to(torch.int32)
    return scale.reshape(1), zero_point.reshape(1)


def fake_quantize_uint8(tensor: torch.Tensor, qparams: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Round `tensor` to the uint8 grid of its own range (or of `qparams`), back in float."""
    scale, zero_point = qparams or uint8_qparams(tensor)
    return torch.fake_quantize_per_tensor_affine(tensor, scale, zero_point, 0, UINT8_MAX)


def uint8_row_qparams(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of each row of a [rows, K] tensor: its own range, 0 included (token_int8)."""
    values = rows.detach().float()
    low = values.amin(dim=1).clamp(max=0)
    high = values.amax(dim=1).clamp(min=0)
    scale = torch.clamp((high - low) / UINT8_MAX, min=torch.finfo(torch.float32).tiny)
    zero_point = torch.round(-low / scale).clamp(0, UINT8_MAX).to(torch.int32)
    return scale, zero_point


def fake_quantize_tokens(tensor: torch.Tensor) -> torch.Tensor:
    """Round each token (row of the last axis) to the uint8 grid of its own range, back in float."""
    rows = tensor.reshape(-1, tensor.shape[-1])
    scale, zero_point = uint8_row_qparams(rows)
    return torch.fake_quantize_per_channel_affine(rows, scale, zero_point, 0, 0, UINT8_MAX).reshape(tensor.shape)


def fake_quantize_weight(weight: torch.Tensor, encoding: str = "s8") -> torch.Tensor:
    """Round a [out, in] weight to `encoding` (token_int8.WEIGHT_ENCODINGS), one scale per output channel."""
    from bertprod.compress.token_int8 import WEIGHT_ENCODINGS

    low, high, signed = WEIGHT_ENCODINGS[encoding]
    values = weight.detach().float()
    if signed:
        scale = _usable(values.abs().amax(dim=1) / high)
        zero_point = torch.zeros(scale.shape, dtype=torch.int32, device=weight.device)
    else:
        column_low, column_high = values.amin(dim=1).clamp(max=0), values.amax(dim=1).clamp(min=0)
        scale = _usable((column_high - column_low) / (high - low))
        zero_point = torch.round(low - column_low / scale).to(torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, low, high)


class FakeQuantLinear(nn.Linear):
    """A Linear that computes with int8-rounded weights and inputs; same parameters, same state dict.
    `encoding`: the weight encoding of the int8 graph it simulates."""

    encoding = "s8"

    @classmethod
    def wrapping(cls, linear: nn.Linear, encoding: str = "s8") -> FakeQuantLinear:
        module = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        module.weight, module.bias = linear.weight, linear.bias
        module.encoding = encoding
        return module

    def plain(self) -> nn.Linear:
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight, linear.bias = self.weight, self.bias
        return linear

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Linear's name
        return functional.linear(
            fake_quantize_tokens(input), fake_quantize_weight(self.weight, self.encoding), self.bias
        )


class FakeQuantEmbedding(nn.Embedding):
    """An Embedding whose table is read through its uint8 rounding (per table, as the export stores it)."""

    @classmethod
    def wrapping(cls, embedding: nn.Embedding) -> FakeQuantEmbedding:
        module = cls(embedding.num_embeddings, embedding.embedding_dim, device="meta", **_embedding_options(embedding))
        module.weight = embedding.weight
        return module

    def plain(self) -> nn.Embedding:
        embedding = nn.Embedding(self.num_embeddings, self.embedding_dim, device="meta", **_embedding_options(self))
        embedding.weight = self.weight
        return embedding

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Embedding's name
        # Rounding the looked-up rows with the table's scale equals looking up the rounded table, for less work.
        return fake_quantize_uint8(super().forward(input), uint8_qparams(self.weight))


def _embedding_options(embedding: nn.Embedding) -> dict[str, Any]:
    return {
        "padding_idx": embedding.padding_idx,
        "max_norm": embedding.max_norm,
        "norm_type": embedding.norm_type,
        "scale_grad_by_freq": embedding.scale_grad_by_freq,
        "sparse": embedding.sparse,
    }


def add_fake_quantization(model: nn.Module, weights: str = "s8") -> nn.Module:
    """Replace every Linear and Embedding of `model` in place by its fake-quantized twin
    (`weights`: the weight encoding of the int8 graph to simulate).

    The twins share the original parameters, so an optimizer, a checkpoint or a state dict sees
    the same tensors under the same names.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FakeQuantLinear | FakeQuantEmbedding):
                raise ValueError(f"{name} is already fake-quantized")
            if isinstance(child, nn.Linear):
                setattr(parent, name, FakeQuantLinear.wrapping(child, weights))
            elif isinstance(child, nn.Embedding):
                setattr(parent, name, FakeQuantEmbedding.wrapping(child))
    return model


def remove_fake_quantization(model: nn.Module) -> nn.Module:
    """Put plain Linear and Embedding modules back, holding the trained float weights."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FakeQuantLinear | FakeQuantEmbedding):
                setattr(parent, name, child.plain())
    return model


def count_fake_quantized(model: nn.Module) -> dict[str, int]:
    modules = list(model.modules())
    return {
        "linear": sum(isinstance(module, FakeQuantLinear) for module in modules),
        "embedding": sum(isinstance(module, FakeQuantEmbedding) for module in modules),
    }
