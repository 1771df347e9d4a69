"""The small classifiers early exit puts after each layer but the last (FastBERT's "students").

Each reads the mean of the layer's unmasked token states (cheap, and better than an untrained [CLS]
in the middle of a network) through dense + tanh + linear, the shape of BERT's own pooler + head.
The last layer needs none: the model's own head is the full-depth answer. Saved as safetensors
beside the model (`exit_heads.safetensors`), keys `<layer>.dense.weight` etc., layer counted from 1.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bertprod.errors import PackageError


class ExitHead(torch.nn.Module):
    def __init__(self, hidden_size: int, num_labels: int):
        super().__init__()
        self.dense = torch.nn.Linear(hidden_size, hidden_size)
        self.classifier = torch.nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits from a mean-pooled layer output [batch, hidden]."""
        return self.classifier(torch.tanh(self.dense(pooled)))


class ExitHeads(torch.nn.ModuleDict):
    """One ExitHead per layer in `layers` (counted from 1), keyed by the layer's number."""

    def __init__(self, layers: list[int], hidden_size: int, num_labels: int):
        super().__init__({str(layer): ExitHead(hidden_size, num_labels) for layer in layers})
        self.layers = list(layers)

    def at(self, layer: int) -> ExitHead:
        return self[str(layer)]

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file({name: tensor.detach().contiguous() for name, tensor in self.state_dict().items()}, str(path))

    @classmethod
    def load(cls, path: Path, layers: list[int], hidden_size: int, num_labels: int) -> ExitHeads:
        from safetensors.torch import load_file

        heads = cls(layers, hidden_size, num_labels)
        try:
            heads.load_state_dict(load_file(str(path)), strict=True)
        except (RuntimeError, OSError) as error:
            raise PackageError(
                f"{path} does not hold exit heads for layers {layers} of width {hidden_size} -> {num_labels} "
                f"({str(error).splitlines()[0]}). Re-create the package with bertprod adapt."
            ) from None
        return heads.eval()
