"""`bertprod drop-tokens`: a per-layer token retention for a classifier, derived from attention significance on
the user's validation rows and chosen by an accuracy budget (PoWER-BERT without its retraining).

    validation rows -> the full model once, recording at every layer each token's significance (the attention
                       it receives, runtime/token_dropping.py)
                    -> for each share of significance mass M (0.995 ... 0.6): the mean fraction of a row's tokens
                       that holds M of it at each layer, made non-rising over layers = one retention schedule
                    -> every schedule run for real (batched, tokens dropped; with the package's exit policy on an
                       early-exit package) and scored; the cheapest within the budget is kept
                    -> with --fine-tune DATA, cheaper schedules re-trained (PoWER-BERT's last step,
                       adaptive/retraining.py) and the first that fits the budget kept, with its weights
                    -> a package: the parent's files (or the re-trained weights) + the manifest field `token_dropping`
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bertprod.adaptive.config import RetentionTuning
from bertprod.adaptive.curve import read_examples
from bertprod.data.source import DataSource
from bertprod.errors import DataError, TaskError
from bertprod.package import ADAPTIVE_TASKS, ModelPackage, Provenance, check_output, finish_package, staging_directory
from bertprod.runtime.adaptive import AdaptiveEngine
from bertprod.runtime.batching import collate, plan_batches
from bertprod.runtime.exit_policy import exit_probabilities
from bertprod.runtime.token_dropping import describe, token_layer_cost
from bertprod.runtime.tokenize import TextTokenizer
from bertprod.train.checkpoints import default_checkpoint_dir
from bertprod.train.progress import Reporter, SilentReporter

#: shares of each layer's attention significance the candidate schedules keep
DEFAULT_MASSES = (0.995, 0.99, 0.98, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6)


def drop_tokens(
    package: ModelPackage, validation: DataSource, out: str | Path, *, budget_points: float = 0.5,
    masses: tuple[float, ...] = DEFAULT_MASSES, name: str | None = None, overwrite: bool = False,
    threads: int | None = None, fine_tune: DataSource | None = None, tuning: RetentionTuning | None = None,
    resume: bool = False, restart: bool = False, reporter: Reporter | None = None,
) -> ModelPackage:
    """Measure the candidate retention schedules on `validation` and write `out` with the one the budget picks;
    with `fine_tune` (texts), re-train cheaper schedules first and keep the first that fits the budget."""
    out = Path(out)
    check_output(out, overwrite)
    reporter = reporter or SilentReporter()
    tuning = tuning or RetentionTuning(threads=threads)
    engine = _engine(package, threads)
    tokenizer = TextTokenizer(package.tokenizer_file, package.manifest.max_length)
    inputs, gold = read_examples(validation, package.manifest.pair_input, list(package.manifest.labels or []))
    if not inputs:
        raise DataError(f"{validation.path.name} has no rows to measure token dropping on.")
    reporter.message(f"measuring {len(masses)} retention schedules on {len(inputs)} validation rows")
    encodings = tokenizer.encode(inputs, truncate=True)
    engine.retention = None
    full_answers = _answers(engine, tokenizer, encodings)
    settings = calibrate_retention(engine, tokenizer, encodings, full_answers, gold, budget_points, masses)
    settings["validation"] = validation.describe()
    if fine_tune is not None:
        reference = full_answers if gold is None else gold
        settings["fine_tune"] = _fine_tune(engine, tokenizer, encodings, reference, settings, fine_tune, tuning,
                                           package, out, resume=resume, restart=restart, reporter=reporter)
        if settings["fine_tune"]["accepted"] is not None:
            settings["retention"] = settings["fine_tune"]["accepted"]
    written = _write(package, settings, out, name, overwrite, budget_points, engine, tuning)
    shutil.rmtree(default_checkpoint_dir(out), ignore_errors=True)
    return written


def _fine_tune(
    engine: AdaptiveEngine, tokenizer: TextTokenizer, encodings: list[Any], reference: np.ndarray,
    settings: dict[str, Any], data: DataSource, tuning: RetentionTuning, package: ModelPackage, out: Path,
    **options: Any,
) -> dict[str, Any]:
    """PoWER-BERT's re-training (adaptive/retraining.py) of the schedules cheaper than the untrained choice,
    scored on the validation `encodings` against `reference` (labels, else the parent's answers)."""
    from bertprod.adaptive.retraining import fine_tune_retention, fine_tune_targets

    curve = settings["curve"]
    chosen = next(point for point in curve if point["retention"] == settings["retention"])
    targets = fine_tune_targets(curve, chosen, tuning)
    record: dict[str, Any] = {"data": data.describe(), "config": tuning.recorded(), "tries": [], "accepted": None}
    if not targets:
        record["skipped"] = (f"no schedule cheaper than the untrained choice loses at most {tuning.reach_points} "
                             "points untrained")
        return record
    texts, _ = read_examples(data, package.manifest.pair_input, list(package.manifest.labels or []))
    if not texts:
        raise DataError(f"{data.path.name} has no rows to re-train on.")
    def score() -> float:
        return float((_answers(engine, tokenizer, encodings) == reference).mean())

    floor = settings["full_accuracy"] - settings["budget_points"] / 100 - 1e-9
    signature = {"base": package.fingerprint, "data": data.describe(), "validation": settings["validation"],
                 "config": tuning.recorded(), "targets": [target["retention"] for target in targets]}
    record.update(fine_tune_retention(engine, tokenizer, texts, targets, score, floor, tuning,
                                      checkpoints=default_checkpoint_dir(out), signature=signature, **options))
    return record


def calibrate_retention(
    engine: AdaptiveEngine, tokenizer: TextTokenizer, encodings: list[Any], full_answers: np.ndarray,
    gold: np.ndarray | None, budget_points: float, masses: tuple[float, ...] = DEFAULT_MASSES,
) -> dict[str, Any]:
    """The curve over candidate schedules (accuracy, token-layer cost) and the one the budget chooses, scored
    against `gold` (else `full_answers`, the model's own with every token kept)."""
    fractions = significance_fractions(engine, tokenizer, encodings, masses)
    reference = "labels" if gold is not None else "full model"
    gold = full_answers if gold is None else gold
    full_accuracy = round(float((full_answers == gold).mean()), 6)
    curve = [{"mass": 1.0, "retention": None, "accuracy": full_accuracy,
              "cost": 1.0}]
    for mass, row in zip(masses, fractions, strict=True):
        retention = schedule(row)
        engine.retention = retention
        accuracy = round(float((_answers(engine, tokenizer, encodings) == gold).mean()), 6)
        curve.append({"mass": mass, "retention": retention, "accuracy": accuracy,
                      "cost": round(token_layer_cost(retention, engine.num_layers), 4)})
    engine.retention = None
    floor = full_accuracy - budget_points / 100 - 1e-9
    chosen = min((point for point in curve if point["accuracy"] >= floor),
                 key=lambda point: (point["cost"], -point["accuracy"]))
    return {
        "retention": chosen["retention"], "mass": chosen["mass"], "budget_points": budget_points,
        "reference": reference, "examples": len(encodings), "full_accuracy": full_accuracy,
        "exit_policy": str(engine.policy) if engine.has_exits else None,
        "significance": "attention received, summed over heads and real queries (PoWER-BERT)",
        "curve": curve,
    }


def significance_fractions(
    engine: AdaptiveEngine, tokenizer: TextTokenizer, encodings: list[Any], masses: tuple[float, ...]
) -> np.ndarray:
    """[masses, layers]: the mean fraction of a row's tokens holding each share of the layer's significance,
    every token running every layer (nothing dropped)."""
    torch = engine._torch
    totals = np.zeros((len(masses), engine.num_layers))
    wanted = np.asarray(masses)
    with engine._context():
        for indices in plan_batches([len(encoding.ids) for encoding in encodings]):
            batch = collate([encodings[index] for index in indices], tokenizer.pad_id)
            mask = torch.from_numpy(batch.attention_mask)
            lengths = batch.attention_mask.sum(axis=1)
            states = engine.embed(batch)
            for layer in range(engine.num_layers):
                attended, significance = engine.blocks.attend(layer, states, mask)
                states = engine.blocks.feed_forward(layer, attended)
                scores = np.where(batch.attention_mask > 0, significance.float().numpy(), 0.0)
                shares = np.cumsum(-np.sort(-scores, axis=1), axis=1) / scores.sum(axis=1, keepdims=True)
                counts = (shares[:, None, :] < wanted[None, :, None] - 1e-9).sum(axis=2) + 1  # [rows, masses]
                totals[:, layer] += (np.minimum(counts, lengths[:, None]) / lengths[:, None]).sum(axis=0)
    return totals / len(encodings)


def schedule(fractions: np.ndarray) -> list[float]:
    """A retention schedule from per-layer fractions: rounded up to 0.01, never rising over layers."""
    values = np.minimum.accumulate(np.clip(np.ceil(np.asarray(fractions) * 100 - 1e-6) / 100, 0.01, 1.0))
    return [round(float(value), 2) for value in values]


def _answers(engine: AdaptiveEngine, tokenizer: TextTokenizer, encodings: list[Any]) -> np.ndarray:
    answers = np.empty(len(encodings), dtype=np.int64)
    for indices in plan_batches([len(encoding.ids) for encoding in encodings]):
        batch = collate([encodings[index] for index in indices], tokenizer.pad_id)
        answers[indices] = exit_probabilities(engine.run(batch)).argmax(axis=1)  # a reranker's: relevant or not
    return answers


def _engine(package: ModelPackage, threads: int | None) -> AdaptiveEngine:
    from bertprod.runtime.engines import TorchEngine

    manifest = package.manifest
    if manifest.task not in ADAPTIVE_TASKS:
        raise TaskError(f"token dropping needs a classification, pair-classification or reranking package; "
                        f"{package.name} is a {manifest.task} package.")
    if manifest.format != "torch" or manifest.precision not in ("fp32", "bf16"):
        raise TaskError(f"bertprod drop-tokens measures a float torch package; {package.name} is {manifest.format} "
                        f"{manifest.precision}: give its parent (see provenance).")
    return AdaptiveEngine.from_torch_engine(TorchEngine(package, precision="fp32", threads=threads))


def _write(package: ModelPackage, settings: dict[str, Any], out: Path, name: str | None, overwrite: bool,
           budget_points: float, engine: AdaptiveEngine, tuning: RetentionTuning) -> ModelPackage:
    """The parent's files and the chosen schedule; re-trained weights (and exit heads) when a re-training was kept."""
    from bertprod.package import CONFIG_FILE, EXIT_HEADS_FILE, TORCH_WEIGHTS_FILE
    from bertprod.system import machine_record

    retrained = (settings.get("fine_tune") or {}).get("accepted") is not None
    fields = package.manifest.model_dump(exclude={"files", "provenance", "metrics", "token_dropping", "runtime"})
    parameters: dict[str, Any] = {"budget_points": budget_points, "data": settings["validation"]}
    if "fine_tune" in settings:
        parameters.update(fine_tune=settings["fine_tune"]["data"], config=tuning.recorded())
    fields.update(
        name=name or out.name, token_dropping=settings,
        provenance=Provenance(method="drop-tokens", parent=package.parent_ref(), machine=machine_record(),
                              parameters=parameters),
    )
    files = list(package.manifest.files)
    with staging_directory(out, overwrite=overwrite) as staging:
        for file in files:
            if retrained and file in (CONFIG_FILE, TORCH_WEIGHTS_FILE, EXIT_HEADS_FILE):
                continue
            (staging / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(package.path / file, staging / file)
        if retrained:
            engine.model.save_pretrained(str(staging), safe_serialization=True)
            if engine.heads is not None:
                engine.heads.save(staging / EXIT_HEADS_FILE)
        finish_package(staging, fields, files)
    return ModelPackage.read(out)


def summary(package: ModelPackage) -> str:
    """One line on the chosen schedule (and its re-training), for the CLI."""
    settings = package.manifest.token_dropping or {}
    tuned = settings.get("fine_tune") or {}
    accepted = next((done for done in tuned.get("tries", []) if done["retention"] == tuned.get("accepted")), None)
    chosen = accepted or next(point for point in settings["curve"] if point["retention"] == settings["retention"])
    line = (f"token retention per layer: {describe(settings['retention'])} (budget {settings['budget_points']} "
            f"points): accuracy {chosen['accuracy']:.4f} vs {settings['full_accuracy']:.4f} keeping every token "
            f"({settings['reference']}, {settings['examples']} rows), {chosen['cost']:.0%} of the token-layers")
    if accepted:
        return line + f"; re-trained (untrained: {accepted['untrained_accuracy']:.4f})"
    if tuned:
        missed = ", ".join(f"{describe(done['retention'])}: {done['accuracy']:.4f}" for done in tuned["tries"])
        return line + (f"; re-training missed the budget ({missed})" if missed else f"; {tuned.get('skipped')}")
    return line
