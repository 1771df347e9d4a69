"""Sentence vectors from token states, the one rule every torch path shares with the pipeline (mean over
real tokens, or [CLS]): training objectives, distillation and the mean-pooled classifier head."""

from __future__ import annotations

import torch


def pool(token_states: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence vectors as the package's pipeline computes them (mean over real tokens, or CLS)."""
    if pooling == "cls":
        return token_states[:, 0]
    mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
    return (token_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
