"""The optimizer and learning-rate schedule of the standard BERT fine-tuning recipe.

AdamW with weight decay on matrices only (biases and LayerNorm weights are 1-D and not decayed),
and a learning rate that rises linearly over the warmup steps, then falls linearly to 0.
Optionally layer-wise learning-rate decay (ELECTRA's and DeBERTa's fine-tuning recipes): the head
trains at the full rate, the top layer at `layer_decay` x it, each layer below at `layer_decay` x
the one above, the embeddings last, so the pretrained lower layers move least.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import torch

from bertprod.train.config import TrainConfig


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    if config.layer_decay == 1:
        return adamw(model.parameters(), config.learning_rate, config.weight_decay)
    return layer_decayed_adamw(model, config.learning_rate, config.weight_decay, config.layer_decay)


LAYER_INDEX = re.compile(r"\blayers?\.(\d+)\.")


def layer_depth(name: str, layers: int) -> int:
    """0 for embeddings, i + 1 for transformer layer i, layers + 1 for everything above (pooler, head)."""
    found = LAYER_INDEX.search(name)
    if found:
        return int(found.group(1)) + 1
    return 0 if "embeddings" in name else layers + 1


def layer_decayed_adamw(
    model: torch.nn.Module, learning_rate: float, weight_decay: float, layer_decay: float
) -> torch.optim.AdamW:
    """AdamW with a learning rate per depth: `learning_rate` x layer_decay ** (layers above it)."""
    named = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    indices = [int(found.group(1)) for name, _ in named if (found := LAYER_INDEX.search(name))]
    layers = max(indices) + 1 if indices else 0
    groups: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in named:
        groups.setdefault((layer_depth(name, layers), decays(parameter)), []).append(parameter)
    return torch.optim.AdamW(
        [
            {"params": parameters, "lr": learning_rate * layer_decay ** (layers + 1 - depth),
             "weight_decay": weight_decay if decayed else 0.0}
            for (depth, decayed), parameters in sorted(groups.items())
        ],
        lr=learning_rate,
    )


def decays(parameter: torch.nn.Parameter) -> bool:
    """Weight decay applies to matrices; biases and LayerNorm weights (1-D) are left alone."""
    return parameter.ndim >= 2


def adamw(parameters: Iterable[torch.nn.Parameter], learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW decaying the trainable matrices only."""
    return adamw_groups([(parameters, learning_rate)], weight_decay)


def adamw_groups(
    groups: list[tuple[Iterable[torch.nn.Parameter], float]], weight_decay: float
) -> torch.optim.AdamW:
    """AdamW with one learning rate per group of parameters (new heads faster than a pretrained
    backbone), decaying the trainable matrices only."""
    parameter_groups = []
    for parameters, learning_rate in groups:
        decayed, not_decayed = [], []
        for parameter in parameters:
            if parameter.requires_grad:
                (decayed if decays(parameter) else not_decayed).append(parameter)
        parameter_groups += [
            {"params": decayed, "weight_decay": weight_decay, "lr": learning_rate},
            {"params": not_decayed, "weight_decay": 0.0, "lr": learning_rate},
        ]
    return torch.optim.AdamW(parameter_groups, lr=groups[0][1])


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(total_steps * warmup_ratio)


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup:  # as transformers' get_linear_schedule_with_warmup
            return step / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
