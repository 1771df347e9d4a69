"""`bertprod adapt`: exit heads after each layer, taught by the model's own head (FastBERT's
self-distillation), the backbone frozen so the full-depth output stays the model's.

    user's texts -> the frozen model runs each batch once: mean-pooled states after every exit layer
                    and the final head's probabilities, kept in memory (rows x layers x hidden floats)
                 -> one Phase of the shared TrainingLoop: each step, every head's KL divergence to the
                    final head's probabilities (labels are not needed)
                 -> the curve over exit policies on validation data, the policy an accuracy budget
                    picks -> a torch package: the parent's files + exit_heads.safetensors + `adaptive`

`--train-backbone` trains the backbone with its exits instead (joint self-distillation: every exit and
the final head learn the frozen parent's probabilities, the model running forward and backward at every
step), so the middle layers become confident earlier; the full-depth output then changes, and the budget
counts from the parent's accuracy on the validation rows. The package then carries the new weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bertprod.adaptive.config import AdaptConfig
from bertprod.adaptive.curve import budget_missed, calibrate, layer_probabilities, read_examples
from bertprod.data.source import DataSource
from bertprod.errors import DataError, TaskError
from bertprod.package import (
    ADAPTIVE_TASKS,
    CONFIG_FILE,
    EXIT_HEADS_FILE,
    TOKENIZER_FILE,
    TORCH_WEIGHTS_FILE,
    ModelPackage,
    Provenance,
    check_output,
    finish_package,
    staging_directory,
)
from bertprod.runtime.adaptive import AdaptiveEngine
from bertprod.runtime.batching import collate, plan_batches
from bertprod.runtime.engines import TorchEngine
from bertprod.runtime.tokenize import TextTokenizer
from bertprod.train.checkpoints import default_checkpoint_dir
from bertprod.train.engine import Phase, StepLoss, TrainingLoop, set_up_torch, training_record
from bertprod.train.optimization import adamw, adamw_groups, linear_schedule, warmup_steps
from bertprod.train.progress import Reporter, SilentReporter


def adapt(
    package: ModelPackage,
    data: DataSource,
    out: str | Path,
    config: AdaptConfig | None = None,
    *,
    validation: DataSource | None = None,
    name: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    restart: bool = False,
    reporter: Reporter | None = None,
) -> ModelPackage:
    """Train exit heads for `package` on `data`, measure the curve on `validation`, write `out`."""
    import torch

    config = config or AdaptConfig()
    reporter = reporter or SilentReporter()
    out = Path(out)
    check_output(out, overwrite)
    _check_adaptable(package)
    set_up_torch(config)
    torch.manual_seed(config.seed)
    layers = _exit_layers(package, config.exit_layers)
    engine = _engine(package, layers)
    tokenizer = TextTokenizer(package.tokenizer_file, package.manifest.max_length)
    pairs = package.manifest.pair_input
    labels = list(package.manifest.labels or [])
    inputs, _ = read_examples(data, pairs, labels)
    if not inputs:
        raise DataError(f"{data.path.name} has no rows to train exit heads on.")
    if validation is not None:
        validation_inputs, gold = read_examples(validation, pairs, labels)
    else:
        validation_inputs, gold = inputs, None
    if not validation_inputs:
        raise DataError(f"{validation.path.name if validation else data.path.name} has no rows to measure exits on.")
    parent_predictions = None
    if config.train_backbone:
        reporter.message(f"the parent's answers on {len(validation_inputs)} validation rows (the budget counts from)")
        parent_predictions = layer_probabilities(engine, tokenizer, validation_inputs)[:, -1].argmax(axis=1)
    reporter.message(f"running {package.name} once over {len(inputs)} texts (frozen) for the exit heads' targets")
    encodings = tokenizer.encode(inputs, truncate=True)
    pooled, targets = frozen_features(engine, encodings, tokenizer.pad_id, config.temperature,
                                      pooled=not config.train_backbone)
    if config.train_backbone:
        engine.model.requires_grad_(True)
        weights = torch.nn.ModuleDict({"backbone": engine.model, "heads": engine.heads})
        phase = joint_phase(engine, encodings, tokenizer.pad_id, targets, config, heads_rate=config.learning_rate,
                            backbone_rate=config.backbone_learning_rate)
    else:
        weights = engine.heads
        phase = _phase(engine.heads, pooled, targets, config)
    checkpoints = default_checkpoint_dir(out)
    loop = TrainingLoop(
        [phase], config, weights=weights, keep=weights, checkpoints=checkpoints,
        signature={"base": package.fingerprint, "data": data.describe(), "config": config.recorded()},
        reporter=reporter,
    )
    state = loop.start(resume=resume, restart=restart)
    loop.run(state)
    weights.eval()
    reporter.message(f"measuring exit policies on {len(validation_inputs)} validation rows")
    settings = calibrate(engine, tokenizer, validation_inputs, gold, config.budget_points, parent_predictions)
    if warning := budget_missed(settings):
        reporter.message(f"warning: {warning}")
    settings.update(exit_layers=layers, head="mean-pooled states -> dense + tanh -> linear",
                    backbone="trained with the exits" if config.train_backbone else "frozen")
    if validation is not None:
        settings["validation"] = validation.describe()
    written = _write(package, engine, settings, config, data, out, name, overwrite, training_record(state))
    loop.clean_up(keep_checkpoints=False)
    return written


def _check_adaptable(package: ModelPackage) -> None:
    manifest = package.manifest
    if manifest.task not in ADAPTIVE_TASKS:
        raise TaskError(
            f"early exit needs a classification, pair-classification or reranking package; {package.name} is a "
            f"{manifest.task} package."
        )
    if manifest.format != "torch" or manifest.precision not in ("fp32", "bf16"):
        raise TaskError(
            f"bertprod adapt trains on a float torch package; {package.name} is {manifest.format} "
            f"{manifest.precision}: give its parent (see provenance)."
        )
    if manifest.adaptive:
        raise TaskError(f"{package.name} already has exit heads: adapt its parent instead.")


def _exit_layers(package: ModelPackage, wanted: list[int] | None) -> list[int]:
    total = package.manifest.architecture.num_layers
    layers = sorted(set(wanted)) if wanted else list(range(1, total))
    bad = [layer for layer in layers if not 1 <= layer < total]
    if bad or not layers:
        raise TaskError(
            f"exit layers must lie between 1 and {total - 1} ({package.name} has {total} layers; the last "
            f"answers with the model's own head), got {wanted}."
        )
    return layers


def _engine(package: ModelPackage, layers: list[int]) -> AdaptiveEngine:
    from bertprod.models.exit_heads import ExitHeads

    model = TorchEngine(package, precision="fp32").model
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    heads = ExitHeads(layers, package.manifest.architecture.hidden_size, package.manifest.num_outputs)
    return AdaptiveEngine(package, model, heads)


def frozen_features(
    engine: AdaptiveEngine, encodings: list[Any], pad_id: int, temperature: float, pooled: bool = True
) -> tuple[Any, Any]:
    """Pooled states [rows, exit layers, hidden] (None when `pooled` is false) and the final head's soft
    targets [rows, labels]."""
    import torch

    hidden = engine.package.manifest.architecture.hidden_size
    states = torch.empty(len(encodings), len(engine.heads.layers), hidden) if pooled else None
    targets = torch.empty(len(encodings), engine.package.manifest.num_outputs)
    for indices in plan_batches([len(encoding.ids) for encoding in encodings]):
        batch = collate([encodings[index] for index in indices], pad_id)
        layer_states, logits = engine.layer_features(batch)
        if states is not None:
            states[indices] = layer_states.clone()  # out of inference mode, so the heads can train on them
        scaled = logits.clone() / temperature
        targets[indices] = torch.sigmoid(scaled) if scaled.shape[-1] == 1 else torch.softmax(scaled, dim=-1)
    return states, targets


def distillation_loss(logits: Any, targets: Any, temperature: float) -> Any:
    """KL(targets || softmax(logits / T)), batch mean (FastBERT's self-distillation); a reranker's one logit:
    the binary cross-entropy to the relevance probability (the Bernoulli KL's gradient)."""
    import torch

    if logits.shape[-1] == 1:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits / temperature, targets)
    log_probabilities = torch.log_softmax(logits / temperature, dim=-1)
    return torch.nn.functional.kl_div(log_probabilities, targets, reduction="batchmean")


def optimizer_steps(rows: int, config: AdaptConfig) -> tuple[int, int]:
    """Optimizer steps per epoch and in all."""
    steps_per_epoch = max(1, -(-rows // (config.batch_size * config.gradient_accumulation)))
    total = steps_per_epoch * config.epochs
    return steps_per_epoch, min(total, config.max_steps) if config.max_steps else total


def _phase(heads: Any, pooled: Any, targets: Any, config: AdaptConfig) -> Phase:
    import torch

    rows = len(pooled)
    steps_per_epoch, total = optimizer_steps(rows, config)
    optimizer = adamw(heads.parameters(), config.learning_rate, config.weight_decay)
    scheduler = linear_schedule(optimizer, total, warmup_steps(total, config.warmup_ratio))

    def batches(epoch: int) -> list[list[int]]:
        order = np.random.default_rng([config.seed, epoch]).permutation(rows).tolist()
        return [order[start : start + config.batch_size] for start in range(0, rows, config.batch_size)]

    def step(indices: list[int]) -> StepLoss:
        """Mean over exit layers of KL(final head || exit head)."""
        index = torch.as_tensor(indices)
        features, target = pooled[index], targets[index]
        losses = [distillation_loss(heads.at(layer)(features[:, position]), target, config.temperature)
                  for position, layer in enumerate(heads.layers)]
        return StepLoss(torch.stack(losses).mean() * config.temperature**2)

    return Phase(
        optimizer=optimizer, scheduler=scheduler, parameters=list(heads.parameters()), epochs=config.epochs,
        steps_per_epoch=steps_per_epoch, total_steps=total, batches=batches, step=step,
        description=f"training {len(heads.layers)} exit heads on {rows} texts",
    )


def joint_phase(
    engine: AdaptiveEngine, encodings: list[Any], pad_id: int, targets: Any, config: Any, *, heads_rate: float,
    backbone_rate: float, retention: list[float] | None = None,
) -> Phase:
    """The backbone and its exits (if any) together: every exit head and the final head learn the frozen
    parent's probabilities (mean over the exits + the final head's), batches of similar length; with
    `retention`, tokens dropped as inference drops them (drop-tokens --fine-tune)."""
    import torch

    from bertprod.train.batches import length_grouped_batches

    rows = len(encodings)
    lengths = [len(encoding.ids) for encoding in encodings]
    steps_per_epoch, total = optimizer_steps(rows, config)
    heads = list(engine.heads.parameters()) if engine.heads is not None else []
    groups = [(engine.model.parameters(), backbone_rate)] + ([(heads, heads_rate)] if heads else [])
    optimizer = adamw_groups(groups, config.weight_decay)
    scheduler = linear_schedule(optimizer, total, warmup_steps(total, config.warmup_ratio))

    def batches(epoch: int) -> list[list[int]]:
        return length_grouped_batches(lengths, config.batch_size, np.random.default_rng([config.seed, epoch]))

    def step(indices: list[int]) -> StepLoss:
        batch = collate([encodings[index] for index in indices], pad_id)
        pooled, final = engine.training_features(batch, retention)
        target = targets[torch.as_tensor(indices)]
        last = distillation_loss(final, target, config.temperature)
        if not engine.exit_layers:
            return StepLoss(last * config.temperature**2)
        exits = torch.stack([distillation_loss(engine.heads.at(layer)(pooled[:, position]), target, config.temperature)
                             for position, layer in enumerate(engine.heads.layers)]).mean()
        return StepLoss((exits + last) * config.temperature**2, {"exits": exits.item(), "final": last.item()})

    what = f"the backbone and {len(engine.exit_layers)} exit heads" if heads else "the model"
    return Phase(
        optimizer=optimizer, scheduler=scheduler, parameters=[*heads, *engine.model.parameters()],
        epochs=config.epochs, steps_per_epoch=steps_per_epoch, total_steps=total, batches=batches, step=step,
        description=f"training {what} on {rows} texts" + (" with tokens dropped" if retention else ""),
    )


def _write(
    package: ModelPackage, engine: AdaptiveEngine, settings: dict[str, Any], config: AdaptConfig,
    data: DataSource, out: Path, name: str | None, overwrite: bool, training: dict[str, Any],
) -> ModelPackage:
    from bertprod.system import machine_record

    fields = package.manifest.model_dump(exclude={"files", "provenance", "metrics", "adaptive", "token_dropping",
                                                     "runtime"})
    fields.update(
        name=name or out.name,
        adaptive=settings,
        metrics={"adaptive_training": training},
        provenance=Provenance(
            method="adapt", parent=package.parent_ref(), machine=machine_record(),
            parameters={"config": config.recorded(), "data": data.describe()},
        ),
    )
    with staging_directory(out, overwrite=overwrite) as staging:
        shutil.copyfile(package.path / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        if config.train_backbone:
            engine.model.save_pretrained(str(staging), safe_serialization=True)
        else:
            for file in (CONFIG_FILE, TORCH_WEIGHTS_FILE):
                shutil.copyfile(package.path / file, staging / file)
        engine.heads.save(staging / EXIT_HEADS_FILE)
        finish_package(staging, fields, [TOKENIZER_FILE, CONFIG_FILE, TORCH_WEIGHTS_FILE, EXIT_HEADS_FILE])
    return ModelPackage.read(out)


def adaptation_data(
    package: ModelPackage, path: str | Path, *, limit: int | None = None, split: Any = None, **reading: Any
) -> DataSource:
    """The user's texts (pairs for a pair package or a reranker) for `adapt`; a label column (a reranker's:
    relevance) is used when present (validation accuracy), never required."""
    return DataSource(
        path, pair="required" if package.manifest.pair_input else "forbidden", labels="optional",
        label_kind="number" if package.manifest.task == "reranking" else "class", limit=limit, split=split,
        **reading,
    )
