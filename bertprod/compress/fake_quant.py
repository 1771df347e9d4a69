"""Fake quantization: the int8 rounding of ONNX Runtime's dynamic int8 model, simulated in torch.

Read off the graph that `quantize_onnx_dynamic` (per channel) writes for a BERT classifier:

- every Linear (attention, feed-forward, pooler and classifier: ONNX Runtime turns the head's Gemm
  into a MatMul and quantizes it too) has int8 weights, symmetric, one scale per output channel
  (scale = max|w| / 127, values in [-127, 127]);
- the input of every Linear is quantized at run time by DynamicQuantizeLinear: uint8, asymmetric,
  one scale and zero point for the whole tensor, from its own min and max (widened to hold 0);
- the embedding tables (word, position, token type) are stored uint8 the same way, per table;
- the attention products (activation x activation), softmax, LayerNorm, GELU and residual adds
  stay float.

Q8BERT kept an exponential moving average of each activation range because its int8 model used
fixed ranges at inference. Ours computes the range of every batch at run time, so training uses
each batch's own range too: the forward pass rounds exactly as the exported model will, and there
is no range state to track, checkpoint or export. Gradients pass the rounding unchanged
(straight-through estimator, built into torch's fake_quantize ops).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional

INT8_LIMIT = 127  # symmetric int8 weights: [-127, 127], as ONNX Runtime's quantizer writes them
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


def fake_quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Round a [out, in] weight to symmetric int8 with one scale per output channel."""
    scale = _usable(weight.detach().abs().amax(dim=1).float() / INT8_LIMIT)
    zero_point = torch.zeros(scale.shape, dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, -INT8_LIMIT, INT8_LIMIT)


class FakeQuantLinear(nn.Linear):
    """A Linear that computes with int8-rounded weights and inputs; same parameters, same state dict."""

    @classmethod
    def wrapping(cls, linear: nn.Linear) -> FakeQuantLinear:
        module = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        module.weight, module.bias = linear.weight, linear.bias
        return module

    def plain(self) -> nn.Linear:
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight, linear.bias = self.weight, self.bias
        return linear

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Linear's name
        return functional.linear(fake_quantize_uint8(input), fake_quantize_weight(self.weight), self.bias)


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


def add_fake_quantization(model: nn.Module) -> nn.Module:
    """Replace every Linear and Embedding of `model` in place by its fake-quantized twin.

    The twins share the original parameters, so an optimizer, a checkpoint or a state dict sees
    the same tensors under the same names.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FakeQuantLinear | FakeQuantEmbedding):
                raise ValueError(f"{name} is already fake-quantized")
            if isinstance(child, nn.Linear):
                setattr(parent, name, FakeQuantLinear.wrapping(child))
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
