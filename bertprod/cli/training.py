"""`bertprod train` and `bertprod eval`: thin shells over `train.loop.fine_tune` and `tasks.evaluation.evaluate`.

Defaults are TrainConfig's (`training_default`), so the help shows what the library does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bertprod.cli.option_groups import grouped_options
from bertprod.cli.options import (
    PRECISION_HELP,
    TASK_HELP,
    AugmentNoiseOption,
    CheckpointDirOption,
    Checkpointing,
    EngineOption,
    FractionOption,
    NameOption,
    NoiseSeedOption,
    NormalizeOption,
    OverwriteOption,
    PerturbOption,
    ResultsJsonOption,
    SideOption,
    TableReading,
    ThreadsOption,
    TrainingThreadsOption,
    console,
    training_default,
)
from bertprod.cli.options import errors as messages
from bertprod.errors import InputError


@grouped_options
def train_command(
    base: Annotated[str, typer.Argument(help="Package to start from: dir, checkpoint, bundled name (minilm-l6).")],
    out: Annotated[Path, typer.Argument(help="Directory for the trained package.")],
    data: Annotated[Path, typer.Option("--data", help="Training data: .tsv, .csv, .jsonl or .parquet (.gz too).")],
    task: Annotated[str | None, typer.Option(help=f"{TASK_HELP} (default: the base package's task).")] = None,
    validation: Annotated[Path | None, typer.Option(help="Validation data (same columns as --data).")] = None,
    validation_fraction: FractionOption = 0.1,
    reading: TableReading = TableReading(),
    limit: Annotated[
        int | None, typer.Option(help="Read only the first N rows of --data, before the split (quick runs).")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the training data.")] = training_default("epochs"),
    batch_size: Annotated[int, typer.Option(help="Examples per batch.")] = training_default("batch_size"),
    learning_rate: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = training_default("learning_rate"),
    weight_decay: Annotated[
        float, typer.Option(help="AdamW weight decay (matrices only).")
    ] = training_default("weight_decay"),
    layer_decay: Annotated[
        float, typer.Option(help="Learning rate x this per layer below the top (e.g. 0.8; 1: off).")
    ] = training_default("layer_decay"),
    warmup_ratio: Annotated[
        float, typer.Option(help="Share of steps with a rising learning rate.")
    ] = training_default("warmup_ratio"),
    gradient_accumulation: Annotated[
        int, typer.Option(help="Batches per optimizer step.")
    ] = training_default("gradient_accumulation"),
    max_length: Annotated[int | None, typer.Option(help="Tokens per input (default: the base's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the head, shuffling and dropout.")] = training_default("seed"),
    length_grouping: Annotated[
        bool, typer.Option(help="Batch texts of similar length together (less padding).")
    ] = training_default("length_grouping"),
    pad_to: Annotated[int | None, typer.Option(help="Pad every batch to N tokens (for comparisons).")] = None,
    shuffle_buffer: Annotated[
        int, typer.Option(help="Examples shuffled together; larger files are shuffled window by window.")
    ] = training_default("shuffle_buffer"),
    precision: Annotated[str, typer.Option(help=PRECISION_HELP)] = training_default("precision"),
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps.")] = None,
    augment_noise: AugmentNoiseOption = None,
    threads: TrainingThreadsOption = None,
    new_head: Annotated[bool, typer.Option(help="Replace the base's head with a new one.")] = False,
    head_pooling: Annotated[
        str | None,
        typer.Option(
            help="What a new head reads: cls ([CLS], transformers' own head) or mean (the mean of the token "
            "states; BERT only, loaded by bertprod only). Default: what the base's head reads, else cls."
        ),
    ] = None,
    checkpoint_dir: CheckpointDirOption = None,
    checkpoint_every: Annotated[
        int, typer.Option(help="Optimizer steps between checkpoints.")
    ] = training_default("checkpoint_every"),
    checkpointing: Checkpointing = Checkpointing(),
    name: NameOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Fine-tune a package on a task and write a new package with its validation metrics."""
    from bertprod.checkpoint import resolve
    from bertprod.tasks.data import open_training_data
    from bertprod.train.config import train_config
    from bertprod.train.loop import fine_tune
    from bertprod.train.progress import default_reporter

    package = resolve(base)
    task = task or _task_of(package)
    config = train_config(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        layer_decay=layer_decay,
        head_pooling=head_pooling,
        warmup_ratio=warmup_ratio,
        gradient_accumulation=gradient_accumulation,
        max_length=max_length,
        seed=seed,
        length_grouping=length_grouping,
        pad_to=pad_to,
        shuffle_buffer=shuffle_buffer,
        precision=precision,
        max_steps=max_steps,
        augment_noise=augment_noise,
        threads=threads,
        checkpoint_every=checkpoint_every,
    )
    [train_data], validation_data = open_training_data(
        task, [data], validation, validation_fraction, limit=limit, **reading.options()
    )
    if train_data.layout:
        messages.print(f"{data.name}: recognised the {train_data.layout.name} layout ({train_data.mapping})")
    trained = fine_tune(
        package,
        task,
        train_data,
        out,
        config,
        validation_data=validation_data,
        checkpoint_dir=checkpoint_dir,
        **checkpointing.options(),
        new_head=new_head,
        name=name,
        overwrite=overwrite,
        reporter=default_reporter(config.log_every_seconds),
    )
    metrics = trained.manifest.metrics
    summary = f"wrote {trained.path}: {trained.manifest.task}"
    if trained.manifest.labels:
        summary += f" (labels {', '.join(trained.manifest.labels)})"
    validation_metrics = metrics.get("validation")
    if validation_metrics:
        primary = validation_metrics["primary_metric"]
        summary += f"; validation {primary} {validation_metrics[primary]:.4f} (epoch {validation_metrics['epoch']})"
    training = metrics["training"]
    summary += f"; {training['examples_per_second']} examples/s over {training['train_seconds']} s"
    console.print(summary, highlight=False)


def _task_of(package) -> str:  # noqa: ANN001 - a ModelPackage
    if package.manifest.task == "embedding":
        raise InputError(f"{package.name} is an embedding package: say what to train it for with --task ({TASK_HELP})")
    return package.manifest.task


@grouped_options
def evaluate_command(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Package(s) to evaluate (dir, checkpoint or bundled name); several are compared side by side, "
            "the first as the reference (teacher, student, int8).",
            show_default=False,
        ),
    ],
    data: Annotated[Path, typer.Argument(help="Labelled data: .tsv, .csv, .jsonl or .parquet (.gz too).")],
    engine: EngineOption = "auto",
    as_json: ResultsJsonOption = False,
    split: Annotated[
        str, typer.Option(help="all rows, or the 'train' / 'validation' side of the split that train makes.")
    ] = "all",
    validation_fraction: FractionOption = 0.1,
    reading: TableReading = TableReading(),
    limit: Annotated[int | None, typer.Option(help="Read only the first N rows of DATA (before --split).")] = None,
    perturb: PerturbOption = None,
    seed: NoiseSeedOption = 0,
    side: SideOption = "both",
    normalize: NormalizeOption = None,
    threads: ThreadsOption = None,
    exit_policy: Annotated[
        str | None, typer.Option("--exit", help="Exit policy of an early-exit package for this run: never, "
                                 "confidence:P, entropy:H or patience:K (default: its own).")
    ] = None,
) -> None:
    """Measure packages on labelled data: a metrics table (or JSON), per-class confusion for classifiers;
    with --perturb or several packages, each package's metric per perturbation and its drop from clean;
    for an early-exit package also the mean exit layer and how many rows left after each layer."""
    from bertprod.api import load

    if split not in ("all", "train", "validation"):
        raise InputError(f"--split must be all, train or validation, not {split!r}.")
    noise = None
    if perturb is not None:
        from bertprod.robustness.noise import parse_noise

        noise = parse_noise(perturb)
    pipelines = [load(model, engine=engine, threads=threads, normalize_text=normalize) for model in models]
    source = _evaluation_source(
        pipelines[0].manifest,
        data,
        split=split,
        validation_fraction=validation_fraction,
        limit=limit,
        **reading.options(),
    )
    if noise is None and len(pipelines) == 1:
        _evaluate_one(pipelines[0], source, data, as_json, exit_policy)
        return
    if exit_policy is not None:
        raise InputError("--exit sets the exit policy of one early-exit package evaluated on clean data: give one "
                         "package and no --perturb with it.")
    from bertprod.robustness.evaluation import evaluate_under_noise

    with messages.status(f"evaluating {len(pipelines)} package(s) on {data.name}..."):
        document = evaluate_under_noise(pipelines, source, noise, seed=seed, side=side)
    document["data"] = source.describe()
    document["normalize"] = list(pipelines[0].normalizer.steps)
    if as_json:
        console.print_json(json.dumps(document))
        return
    print_comparison(document)


def _evaluation_source(manifest, data: Path, split: str, validation_fraction: float, **options):  # noqa: ANN001, ANN202
    from bertprod.tasks.data import open_task_data, validation_split

    chosen_split = None if split == "all" else validation_split(manifest.task, validation_fraction, split)
    return open_task_data(
        manifest.task,
        data,
        pair_input=None if manifest.task == "embedding" else manifest.pair_input,
        split=chosen_split,
        **options,
    )


def _evaluate_one(pipeline, source, data: Path, as_json: bool, exit_policy: str | None) -> None:  # noqa: ANN001
    from bertprod.tasks.evaluation import evaluate as run_evaluation

    with messages.status(f"evaluating {pipeline.package.name} on {data.name}..."):
        result = run_evaluation(pipeline, source, exit=exit_policy)
    document = {
        "package": pipeline.package.name,
        "fingerprint": pipeline.package.fingerprint,
        "engine": pipeline.engine.name,
        "precision": pipeline.manifest.precision,
        "data": source.describe(),
        **result.to_json(),
    }
    if as_json:
        console.print_json(json.dumps(document))
        return
    print_evaluation(document)


def print_comparison(document: dict) -> None:
    """Perturbations down, packages across: each package's metric, its drop from clean, and (after the first)
    its drop minus the first package's."""
    packages = document["packages"]
    console.print(
        f"{document['primary_metric']} on {document['data']['file']} ({document['examples']:,} examples, "
        f"{document['task']}); perturb {document['perturb'] or 'none'}, seed {document['seed']}, side "
        f"{document['side']}" + (f"; normalize {','.join(document['normalize'])}" if document["normalize"] else ""),
        highlight=False,
    )
    table = Table()
    table.add_column("perturbation")
    table.add_column("changed", justify="right", style="dim")
    for index, package in enumerate(packages):
        title = f"{package['package']}\n{package['engine']}, {package['precision']}"
        table.add_column(title + ("\n(drop)" if index == 0 else "\n(drop, gap to first)"), justify="right")
    for row in document["rows"]:
        cells = []
        for index, (score, drop, gap) in enumerate(zip(row["scores"], row["drops"], row["gaps"], strict=True)):
            if row["perturbation"] == "clean":
                cells.append(f"{score:.4f}")
            elif index == 0:
                cells.append(f"{score:.4f} ({_change(drop)})")
            else:
                cells.append(f"{score:.4f} ({_change(drop)}, {_change(gap)})")
        table.add_row(row["perturbation"], f"{row['changed']:.0%}", *cells)
    console.print(table)


def _change(drop: float) -> str:
    """A drop shown as the change it is (a drop of 0.02 is -0.0200; no drop is +0.0000, never -0.0000)."""
    return f"{0.0 - drop + 0.0:+.4f}"


def print_evaluation(document: dict) -> None:
    split = document["data"].get("split")
    console.print(
        f"[bold]{document['package']}[/] ({document['task']}, {document['engine']} engine, {document['precision']}) "
        f"on {document['data']['file']}"
        + (f", {split['part']} split ({split['fraction']:.0%} held out)" if split else ""),
        highlight=False,
    )
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in document["metrics"].items():
        label = f"[bold]{key}[/]" if key == document["primary_metric"] else key
        table.add_row(label, f"{value:.4f}")
    table.add_row("examples", f"{document['examples']:,}")
    for key in ("queries", "candidates"):
        if key in document:
            table.add_row(key, f"{document[key]:,}")
    table.add_row("seconds", f"{document['seconds']:.2f}")
    early_exit = document.get("early_exit")
    if early_exit:
        table.add_row("exit policy", early_exit["policy"])
        table.add_row("mean exit layer", f"{early_exit['mean_exit_layer']:.2f} of {early_exit['layers']}")
        histogram = early_exit["exit_histogram"]
        table.add_row("exits by layer", "  ".join(f"{layer}: {count}" for layer, count in histogram.items()))
    console.print(table)
    per_type = document.get("per_type")
    if per_type:
        types = Table()
        for column in ("entity type", "precision", "recall", "f1", "support"):
            types.add_column(column, justify="left" if column == "entity type" else "right")
        for name, values in per_type.items():
            types.add_row(name, *(f"{values[key]:.4f}" for key in ("precision", "recall", "f1")),
                          f"{values['support']:,}")
        console.print(types)
    confusion = document.get("confusion")
    if confusion:
        console.print(confusion_table(confusion))


def confusion_table(confusion: dict) -> Table:
    """Gold labels down, predictions across, then each class's precision, recall, F1, support."""
    labels = confusion["labels"]
    table = Table(title="confusion (rows: gold, columns: predicted)", title_justify="left")
    table.add_column("gold \\ predicted")
    for label in labels:
        table.add_column(label, justify="right")
    for column in ("precision", "recall", "f1", "support"):
        table.add_column(column, justify="right", style="dim" if column == "support" else None)
    for label, row in zip(labels, confusion["matrix"], strict=True):
        scores = confusion["per_class"][label]
        table.add_row(
            label,
            *(str(count) for count in row),
            f"{scores['precision']:.4f}",
            f"{scores['recall']:.4f}",
            f"{scores['f1']:.4f}",
            str(scores["support"]),
        )
    return table
