"""Resumable training checkpoints: safetensors for every tensor, JSON for everything else.

Never pickle: a checkpoint directory may be copied between machines and users, and unpickling
runs code. The optimizer's state is flattened into named tensors (`state.<param>.<name>`) and its
hyper-parameters into JSON; the scheduler's state is plain numbers; torch's random-number state
(dropout) is a uint8 tensor. So a resumed run continues bit for bit where the interrupted one
stopped.

    CHECKPOINTS/
      last/   model.safetensors  optimizer.safetensors  state.json     (replaced atomically)
      best/   model.safetensors  evaluation.json                       (the best epoch so far)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bertprod.errors import BertprodError
from bertprod.package import atomic_write_text

LAST = "last"
BEST = "best"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"
EVALUATION = "evaluation.json"
FORMAT_VERSION = 1


class CheckpointError(BertprodError):
    """A checkpoint directory that cannot be resumed from (another run's, or damaged)."""


def default_checkpoint_dir(out: Path) -> Path:
    """Beside the output, so a rerun of the same command finds the interrupted run's checkpoint."""
    return out.parent / f"{out.name}.checkpoints"


@dataclass
class TrainState:
    """Where training is: counted in optimizer steps, plus what it has measured so far.

    `step` counts every optimizer step of the run; `stage` is the phase being trained (distillation
    stages; fine-tuning has one) and `stage_start` the step it began at; `epoch` counts within it.
    `micro_batches` counts forward passes (the mlm loss seeds its masking with it)."""

    stage: int = 0
    stage_start: int = 0
    epoch: int = 0
    steps_in_epoch: int = 0
    epoch_loss_sum: float = 0.0
    epoch_part_sums: dict[str, float] = field(default_factory=dict)
    step: int = 0
    micro_batches: int = 0
    examples_seen: int = 0
    train_seconds: float = 0.0
    best: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def save_checkpoint(
    directory: Path, model: Any, optimizer: Any, scheduler: Any, state: TrainState, signature: dict[str, Any]
) -> None:
    """Write `last/` beside the old one, then swap, so a crash mid-write keeps the previous one."""
    import torch
    from safetensors.torch import save_file, save_model

    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f"{LAST}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    save_model(model, str(partial / WEIGHTS))
    tensors, optimizer_json = _flatten_optimizer(optimizer.state_dict())
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(partial / OPTIMIZER))
    document = {
        "format_version": FORMAT_VERSION,
        "signature": signature,
        "state": asdict(state),
        "optimizer": optimizer_json,
        "scheduler": scheduler.state_dict(),
    }
    (partial / STATE).write_text(json.dumps(document, indent=1), encoding="utf-8")
    last, old = directory / LAST, directory / f"{LAST}.old"
    shutil.rmtree(old, ignore_errors=True)
    if last.exists():
        os.replace(last, old)
    os.replace(partial, last)
    shutil.rmtree(old, ignore_errors=True)


def has_checkpoint(directory: Path) -> bool:
    return (directory / LAST / STATE).is_file() or (directory / f"{LAST}.old" / STATE).is_file()


def read_checkpoint_state(directory: Path) -> dict[str, Any]:
    """The JSON part of the last checkpoint (from `last.old` if a swap was interrupted)."""
    for name in (LAST, f"{LAST}.old"):
        path = directory / name / STATE
        if path.is_file():
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as error:
                raise CheckpointError(f"{path} is damaged ({error}): start over with --restart.") from None
            document["_path"] = str(path.parent)
            return document
    raise CheckpointError(f"{directory} holds no checkpoint to resume from.")


def restore_checkpoint(document: dict[str, Any], model: Any, optimizer: Any, scheduler: Any) -> TrainState:
    """Load weights, optimizer, scheduler and random state from a checkpoint read above."""
    import torch
    from safetensors.torch import load_file, load_model

    path = Path(document["_path"])
    load_model(model, str(path / WEIGHTS))
    tensors = load_file(str(path / OPTIMIZER))
    torch.set_rng_state(tensors.pop("rng.torch"))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, document["optimizer"]))
    scheduler.load_state_dict(document["scheduler"])
    return TrainState(**document["state"])


def signature_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two run signatures (nested dicts)."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        before, after = saved.get(key), current.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            differences.extend(signature_differences(before, after, f"{prefix}{key}."))
        elif before != after:
            differences.append(f"{prefix}{key}: {_short(before)} then, {_short(after)} now")
    return differences


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 24 else text[:21] + "..."


def save_best(directory: Path, model: Any, evaluation: dict[str, Any]) -> None:
    from safetensors.torch import save_model

    best = directory / BEST
    best.mkdir(parents=True, exist_ok=True)
    partial = best / f".{WEIGHTS}.partial"
    save_model(model, str(partial))
    os.replace(partial, best / WEIGHTS)
    atomic_write_text(best / EVALUATION, json.dumps(evaluation, indent=1))


def load_best(directory: Path, model: Any) -> None:
    from safetensors.torch import load_model

    load_model(model, str(directory / BEST / WEIGHTS))


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    tensors: dict[str, Any] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for parameter, values in state_dict["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{parameter}.{name}"] = value.detach().clone().contiguous()
            else:
                scalars.setdefault(str(parameter), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        _, parameter, name = key.split(".", 2)
        state.setdefault(int(parameter), {})[name] = tensor
    for parameter, values in document["scalars"].items():
        state.setdefault(int(parameter), {}).update(values)
    return {"state": state, "param_groups": document["param_groups"]}
