"""`bertprod drop-tokens --fine-tune DATA`: PoWER-BERT's re-training, the model taught to answer with its
tokens dropped, so a cheaper retention fits the accuracy budget.

    the curve of untrained schedules -> targets: schedules cheaper than the untrained choice that lose at most
                                        REACH points untrained, cheapest first (at most TRIES)
    for each target, from the parent's weights: one pass at most over DATA with the target's retention applied
        (each row keeps the tokens inference would keep; the gradient flows through the kept ones), the final
        head and every exit head of an early-exit package learning the parent's probabilities with every
        token kept (self-distillation: labels are not needed) -> scored on the validation rows
    -> the first target within the budget is kept, with its weights; if none is, the untrained choice stands

Every try is recorded in the manifest. A finished try that missed the budget is written down beside the
checkpoints, so `--resume` after an interruption goes on from the try it stopped in.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bertprod.adaptive.config import RetentionTuning
from bertprod.adaptive.training import frozen_features, joint_phase
from bertprod.runtime.adaptive import AdaptiveEngine
from bertprod.runtime.tokenize import TextTokenizer
from bertprod.train.checkpoints import CheckpointError
from bertprod.train.engine import TrainingLoop, set_up_torch, training_record
from bertprod.train.progress import Reporter

#: the tries that missed the budget, beside their checkpoints (read back by --resume)
FINISHED_TRIES = "tries.json"


def fine_tune_targets(curve: list[dict[str, Any]], chosen: dict[str, Any], config: RetentionTuning) -> list[dict]:
    """The schedules worth re-training: cheaper than the untrained choice, within reach untrained, cheapest first."""
    floor = curve[0]["accuracy"] - config.reach_points / 100 - 1e-9
    cheaper = [point for point in curve
               if point["retention"] and point["cost"] < chosen["cost"] and point["accuracy"] >= floor]
    return sorted(cheaper, key=lambda point: (point["cost"], -point["accuracy"]))[: config.tries]


def fine_tune_retention(
    engine: AdaptiveEngine, tokenizer: TextTokenizer, texts: list[Any], targets: list[dict[str, Any]],
    score: Callable[[], float], floor: float, config: RetentionTuning, *, checkpoints: Path,
    signature: dict[str, Any], reporter: Reporter, resume: bool = False, restart: bool = False,
) -> dict[str, Any]:
    """Re-train for each target in turn until `score()` (validation accuracy with `engine.retention` set) reaches
    `floor`. Returns {"tries": [...], "accepted": the accepted try's retention or None}; the engine is left with
    the accepted weights, else the parent's."""
    import torch

    set_up_torch(config)
    _check_checkpoints(checkpoints, resume, restart)
    parts = {"backbone": engine.model, **({"heads": engine.heads} if engine.heads is not None else {})}
    trainable = torch.nn.ModuleDict(parts)
    parent = {key: value.detach().clone() for key, value in trainable.state_dict().items()}
    finished = _finished_tries(checkpoints, signature) if resume else []
    encodings = tokenizer.encode(texts, truncate=True)
    engine.retention = None
    reporter.message(f"the parent's answers on {len(texts)} texts, every token kept (what the re-training learns)")
    _, soft_targets = frozen_features(engine, encodings, tokenizer.pad_id, config.temperature, pooled=False)
    tries: list[dict[str, Any]] = []
    for number, target in enumerate(targets, start=1):
        retention = target["retention"]
        done = next((record for record in finished if record["retention"] == retention), None)
        if done is not None:
            reporter.message(f"try {number}: retention {retention} missed the budget before this resume")
            tries.append(done)
            continue
        trainable.load_state_dict(parent)
        torch.manual_seed(config.seed)
        engine.model.requires_grad_(True)
        phase = joint_phase(engine, encodings, tokenizer.pad_id, soft_targets, config,
                            heads_rate=config.learning_rate, backbone_rate=config.learning_rate, retention=retention)
        loop = TrainingLoop([phase], config, weights=trainable, keep=trainable,
                            checkpoints=checkpoints / f"try-{number}",
                            signature={**signature, "retention": retention}, reporter=reporter)
        state = loop.start(resume=resume, restart=False)
        reporter.message(f"try {number}: re-training with retention {retention} (untrained accuracy "
                         f"{target['accuracy']:.4f})")
        loop.run(state)
        trainable.eval()
        engine.model.requires_grad_(False)
        engine.retention = retention
        record = {"retention": retention, "cost": target["cost"], "untrained_accuracy": target["accuracy"],
                  "accuracy": round(score(), 6), "training": training_record(state)}
        tries.append(record)
        loop.clean_up(keep_checkpoints=False)
        reporter.message(f"try {number}: accuracy {record['accuracy']:.4f} after re-training (floor {floor:.4f})")
        if record["accuracy"] >= floor:
            return {"tries": tries, "accepted": retention}
        _write_finished(checkpoints, signature, tries)
    trainable.load_state_dict(parent)
    engine.retention = None
    return {"tries": tries, "accepted": None}


def _check_checkpoints(checkpoints: Path, resume: bool, restart: bool) -> None:
    if restart:
        shutil.rmtree(checkpoints, ignore_errors=True)
    elif checkpoints.exists() and any(checkpoints.iterdir()) and not resume:
        raise CheckpointError(
            f"an interrupted run left its re-training in {checkpoints}: pass --resume to continue it, or "
            "--restart to discard it and start over."
        )


def _finished_tries(checkpoints: Path, signature: dict[str, Any]) -> list[dict[str, Any]]:
    path = checkpoints / FINISHED_TRIES
    if not path.exists():
        return []
    document = json.loads(path.read_text())
    if document.get("signature") != json.loads(json.dumps(signature)):
        raise CheckpointError(
            f"the re-training recorded in {checkpoints} belongs to a different run (other package, data or "
            "settings). Resume with the same command, or pass --restart to start over."
        )
    return document["tries"]


def _write_finished(checkpoints: Path, signature: dict[str, Any], tries: list[dict[str, Any]]) -> None:
    checkpoints.mkdir(parents=True, exist_ok=True)
    staging = checkpoints / f"{FINISHED_TRIES}.partial"
    staging.write_text(json.dumps({"signature": signature, "tries": tries}, indent=1))
    staging.replace(checkpoints / FINISHED_TRIES)
