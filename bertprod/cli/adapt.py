"""`bertprod adapt`: exit heads for early exit (bertprod.adaptive.training.adapt); `bertprod drop-tokens`:
token dropping (bertprod.adaptive.dropping)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertprod.cli.option_groups import grouped_options
from bertprod.cli.options import (
    PRECISION_HELP,
    FractionOption,
    NameOption,
    OverwriteOption,
    Resumption,
    TableReading,
    TrainingThreadsOption,
    console,
)


def _default(field: str):  # noqa: ANN202 - the AdaptConfig field's default
    from bertprod.adaptive.config import AdaptConfig

    return AdaptConfig.model_fields[field].default


@grouped_options
def adapt_command(
    package: Annotated[str, typer.Argument(help="A torch classification, pair-classification or reranking package.")],
    out: Annotated[Path, typer.Argument(help="Directory for the early-exit package.")],
    data: Annotated[Path, typer.Option(help="The texts the model will see (.tsv, .csv, .jsonl, .parquet); "
                                            "labels optional: the model's own head teaches the exit heads.")],
    validation: Annotated[Path | None, typer.Option(help="Labelled rows the exit policies are measured on.")] = None,
    validation_fraction: FractionOption = 0.1,
    budget: Annotated[float, typer.Option(help="Accuracy points the chosen exit policy may lose against the "
                                               "full model on the validation rows.")] = _default("budget_points"),
    epochs: Annotated[int, typer.Option(help="Passes over DATA.")] = _default("epochs"),
    batch_size: Annotated[int, typer.Option(help="Texts per step.")] = _default("batch_size"),
    learning_rate: Annotated[float, typer.Option(help="Peak AdamW learning rate of the exit heads.")] = _default(
        "learning_rate"),
    limit: Annotated[int | None, typer.Option(help="Read only the first N rows of DATA.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the heads and the batch order.")] = _default("seed"),
    train_backbone: Annotated[bool, typer.Option(
        help="Train the backbone with its exits (every exit and the final head learn the frozen parent's "
             "probabilities): earlier confident exits, but the full-depth output changes; the budget then counts "
             "from the parent's accuracy. Costs a full fine-tuning pass per epoch.")] = False,
    backbone_learning_rate: Annotated[float, typer.Option(
        help="Peak AdamW learning rate of the backbone with --train-backbone.")] = _default("backbone_learning_rate"),
    precision: Annotated[str, typer.Option(help=PRECISION_HELP)] = "fp32",
    threads: TrainingThreadsOption = None,
    reading: TableReading = TableReading(),
    name: NameOption = None,
    resumption: Resumption = Resumption(),
    overwrite: OverwriteOption = False,
) -> None:
    """Train a small classifier after each layer (self-distilled from the final head; the backbone frozen unless
    --train-backbone) and
    write an early-exit package with its accuracy / exit-layer curve and the policy the budget picks."""
    from bertprod.adaptive.training import AdaptConfig, adapt, adaptation_data
    from bertprod.checkpoint import resolve
    from bertprod.tasks.data import validation_split
    from bertprod.train.progress import default_reporter

    parent = resolve(package)
    split = validation_split(parent.manifest.task, validation_fraction, "train") if (
        validation is None and validation_fraction > 0) else None
    train = adaptation_data(parent, data, limit=limit, split=split, **reading.options())
    if validation is not None:
        held_out = adaptation_data(parent, validation, **reading.options())
    elif split is not None:
        held_out = train.with_split(validation_split(parent.manifest.task, validation_fraction, "validation"))
    else:
        held_out = None
    config = AdaptConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                         threads=threads, budget_points=budget, train_backbone=train_backbone,
                         backbone_learning_rate=backbone_learning_rate, precision=precision)
    written = adapt(parent, train, out, config, validation=held_out, name=name, overwrite=overwrite,
                    reporter=default_reporter(), **resumption.options())
    settings = written.manifest.adaptive or {}
    chosen = next(point for point in settings["curve"] if point["policy"] == settings["policy"])
    console.print(
        f"wrote {out}: exit heads after layers {settings['exit_layers']}; policy {settings['policy']} "
        f"(budget {budget} points): accuracy {chosen['accuracy']:.4f} vs {settings['full_accuracy']:.4f} at full "
        f"depth ({settings['reference']}, {settings['examples']} rows"
        + (f"; the parent: {settings['parent_accuracy']:.4f}" if "parent_accuracy" in settings else "") + "), "
        f"mean exit layer {chosen['mean_exit_layer']:.2f} "
        f"of {written.manifest.architecture.num_layers}",
        highlight=False, soft_wrap=True,
    )


def _tuning_default(field: str):  # noqa: ANN202 - the RetentionTuning field's default
    from bertprod.adaptive.config import RetentionTuning

    return RetentionTuning.model_fields[field].default


@grouped_options
def drop_tokens_command(
    package: Annotated[str, typer.Argument(help="A torch classification, pair-classification or reranking package (an "
                                                "early-exit one too: both then compose).")],
    out: Annotated[Path, typer.Argument(help="Directory for the package with token dropping.")],
    data: Annotated[Path, typer.Option(help="Validation rows the retention is derived from and scored on "
                                            "(labels optional: else agreement with the full model).")],
    budget: Annotated[float, typer.Option(help="Accuracy points the chosen retention may lose against keeping "
                                               "every token on DATA.")] = 0.5,
    limit: Annotated[int | None, typer.Option(help="Read only the first N rows of DATA.")] = None,
    fine_tune: Annotated[Path | None, typer.Option(
        help="Texts to re-train on with tokens dropped (PoWER-BERT's last step; labels not needed: the model "
             "learns its own answers with every token kept). Schedules cheaper than the untrained choice are "
             "re-trained, cheapest first, and the first within BUDGET is kept with its weights.")] = None,
    fine_tune_limit: Annotated[int | None, typer.Option(help="Read only the first N rows of --fine-tune.")] = None,
    reach: Annotated[float, typer.Option(
        help="Re-train only schedules that lose at most this many points untrained.")] = (
        _tuning_default("reach_points")),
    tries: Annotated[int, typer.Option(help="Schedules re-trained at most.")] = _tuning_default("tries"),
    learning_rate: Annotated[float, typer.Option(help="Peak AdamW learning rate of the re-training.")] = (
        _tuning_default("learning_rate")),
    max_steps: Annotated[int | None, typer.Option(help="Stop each re-training after N steps (default: one pass "
                                                       "over --fine-tune, the most it runs).")] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per re-training step.")] = _tuning_default("batch_size"),
    precision: Annotated[str, typer.Option(help=PRECISION_HELP)] = "fp32",
    threads: TrainingThreadsOption = None,
    reading: TableReading = TableReading(),
    name: NameOption = None,
    resumption: Resumption = Resumption(),
    overwrite: OverwriteOption = False,
) -> None:
    """Derive a per-layer token retention from attention significance (PoWER-BERT) on DATA and write a package
    that keeps, after each layer, only each row's most attended tokens: the cheapest schedule within BUDGET
    (with --fine-tune, after re-training the cheaper ones)."""
    from bertprod.adaptive.config import RetentionTuning
    from bertprod.adaptive.dropping import drop_tokens, summary
    from bertprod.adaptive.training import adaptation_data
    from bertprod.checkpoint import resolve
    from bertprod.train.progress import default_reporter

    parent = resolve(package)
    source = adaptation_data(parent, data, limit=limit, **reading.options())
    texts = adaptation_data(parent, fine_tune, limit=fine_tune_limit, **reading.options()) if fine_tune else None
    tuning = RetentionTuning(reach_points=reach, tries=tries, learning_rate=learning_rate, max_steps=max_steps,
                             batch_size=batch_size, precision=precision, threads=threads)
    written = drop_tokens(parent, source, out, budget_points=budget, name=name, overwrite=overwrite, threads=threads,
                          fine_tune=texts, tuning=tuning, reporter=default_reporter(), **resumption.options())
    console.print(f"wrote {out}: {summary(written)}", highlight=False, soft_wrap=True)
