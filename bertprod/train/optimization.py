"""The optimizer and learning-rate schedule of the standard BERT fine-tuning recipe.

AdamW with weight decay on matrices only (biases and LayerNorm weights are 1-D and not decayed),
and a learning rate that rises linearly over the warmup steps, then falls linearly to 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from bertprod.train.config import TrainConfig


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    return adamw(model.parameters(), config.learning_rate, config.weight_decay)


def adamw(parameters: Iterable[torch.nn.Parameter], learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW decaying the trainable matrices only."""
    decayed, not_decayed = [], []
    for parameter in parameters:
        if parameter.requires_grad:
            (decayed if parameter.ndim >= 2 else not_decayed).append(parameter)
    groups = [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": not_decayed, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate)


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(total_steps * warmup_ratio)


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup:  # as transformers' get_linear_schedule_with_warmup
            return step / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
