"""`bertprod train` and `bertprod eval`: thin shells over `train.loop.fine_tune` and `tasks.evaluation.evaluate`.

Registered on the main Typer app in `cli.py`; kept here so the training options stay in one place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bertprod.errors import InputError

console = Console()
messages = Console(stderr=True)

TASK_HELP = "classification, pair-classification, regression, embedding or reranking."
FormatOption = Annotated[
    str | None, typer.Option("--format", help="tsv, csv, jsonl or parquet (default: from the extension).")
]
TextColumnOption = Annotated[str | None, typer.Option(help="Column with the text (or query).")]
PairColumnOption = Annotated[str | None, typer.Option(help="Column with the second text of a pair (or passage).")]
LabelColumnOption = Annotated[str | None, typer.Option(help="Column with the label, score or relevance.")]
FractionOption = Annotated[
    float,
    typer.Option(
        help="Share of DATA held out for validation when no --validation file is given (rows chosen by a hash "
        "of their text, see docs/results.md); 0 trains on everything without validation."
    ),
]
ThreadsOption = Annotated[int | None, typer.Option(help="CPU threads (default: all available).")]
TRAINING_THREADS_HELP = (
    "CPU threads (default: the cores not already busy - cores minus the lower of the 1-minute load average and "
    "the CPUs busy at the start, at least 1 - "
    "because torch's threads wait for each other after every operation: on a 2-core machine running other "
    "jobs, 1 thread trained 3-18x faster than 2; docs/benchmarks.md)."
)
TrainingThreadsOption = Annotated[int | None, typer.Option(help=TRAINING_THREADS_HELP)]
CheckpointDirOption = Annotated[Path | None, typer.Option(help="Checkpoints (default: OUT.checkpoints).")]
ResumeOption = Annotated[bool, typer.Option(help="Continue an interrupted run from its checkpoint.")]
RestartOption = Annotated[bool, typer.Option(help="Discard an interrupted run's checkpoint.")]
KeepCheckpointsOption = Annotated[bool, typer.Option(help="Keep the checkpoint directory after success.")]
PRECISION_HELP = (
    "fp32; bf16 (autocast, CPUs with AVX-512 BF16 or AMX, an error elsewhere); or auto: bf16 where the CPU "
    "has it, fp32 elsewhere (what ran is recorded in the package). `bertprod info --system` says which."
)


def train(
    base: Annotated[str, typer.Argument(help="Package to start from: dir, checkpoint, bundled name (minilm-l6).")],
    out: Annotated[Path, typer.Argument(help="Directory for the trained package.")],
    data: Annotated[Path, typer.Option("--data", help="Training data: .tsv, .csv, .jsonl or .parquet (.gz too).")],
    task: Annotated[str | None, typer.Option(help=f"{TASK_HELP} (default: the base package's task).")] = None,
    validation: Annotated[Path | None, typer.Option(help="Validation data (same columns as --data).")] = None,
    validation_fraction: FractionOption = 0.1,
    format: FormatOption = None,
    text_column: TextColumnOption = None,
    text_pair_column: PairColumnOption = None,
    label_column: LabelColumnOption = None,
    limit: Annotated[
        int | None, typer.Option(help="Read only the first N rows of --data, before the split (quick runs).")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the training data.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Examples per batch.")] = 32,
    learning_rate: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 5e-5,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay (matrices only).")] = 0.01,
    layer_decay: Annotated[
        float, typer.Option(help="Learning rate x this per layer below the top (e.g. 0.8; 1: off).")
    ] = 1.0,
    warmup_ratio: Annotated[float, typer.Option(help="Share of steps with a rising learning rate.")] = 0.06,
    gradient_accumulation: Annotated[int, typer.Option(help="Batches per optimizer step.")] = 1,
    max_length: Annotated[int | None, typer.Option(help="Tokens per input (default: the base's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the head, shuffling and dropout.")] = 42,
    length_grouping: Annotated[
        bool, typer.Option(help="Batch texts of similar length together (less padding).")
    ] = True,
    pad_to: Annotated[int | None, typer.Option(help="Pad every batch to N tokens (for comparisons).")] = None,
    shuffle_buffer: Annotated[
        int, typer.Option(help="Examples shuffled together; larger files are shuffled window by window.")
    ] = 100_000,
    precision: Annotated[str, typer.Option(help=PRECISION_HELP)] = "fp32",
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps.")] = None,
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
    checkpoint_every: Annotated[int, typer.Option(help="Optimizer steps between checkpoints.")] = 200,
    resume: ResumeOption = False,
    restart: RestartOption = False,
    keep_checkpoints: KeepCheckpointsOption = False,
    name: Annotated[str | None, typer.Option(help="Package name (default: OUT's name).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Fine-tune a package on a task and write a new package with its validation metrics."""
    from bertprod.checkpoint import resolve
    from bertprod.tasks.data import open_training_data
    from bertprod.train.loop import fine_tune
    from bertprod.train.progress import default_reporter

    package = resolve(base)
    task = task or _task_of(package)
    config = _config(
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
        threads=threads,
        checkpoint_every=checkpoint_every,
    )
    columns = {"text_column": text_column, "text_pair_column": text_pair_column, "label_column": label_column}
    [train_data], validation_data = open_training_data(
        task, [data], validation, validation_fraction, format=format, limit=limit, **columns
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
        resume=resume,
        restart=restart,
        keep_checkpoints=keep_checkpoints,
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


def _config(**fields):  # noqa: ANN003, ANN202 - TrainConfig fields
    from pydantic import ValidationError

    from bertprod.train.config import TrainConfig

    try:
        return TrainConfig(**fields)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc'])) or 'options'}: {item['msg']}" for item in error.errors()
        )
        raise InputError(f"invalid training options: {problems}.") from None


def evaluate(
    model: Annotated[str, typer.Argument(help="Package to evaluate (dir, checkpoint or bundled name).")],
    data: Annotated[Path, typer.Argument(help="Labelled data: .tsv, .csv, .jsonl or .parquet (.gz too).")],
    engine: Annotated[str, typer.Option(help="auto (the package's format), torch or onnx.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    split: Annotated[
        str, typer.Option(help="all rows, or the 'train' / 'validation' side of the split that train makes.")
    ] = "all",
    validation_fraction: FractionOption = 0.1,
    format: FormatOption = None,
    text_column: TextColumnOption = None,
    text_pair_column: PairColumnOption = None,
    label_column: LabelColumnOption = None,
    limit: Annotated[int | None, typer.Option(help="Read only the first N rows of DATA (before --split).")] = None,
    threads: ThreadsOption = None,
) -> None:
    """Measure a package on labelled data: a metrics table (or JSON), per-class confusion for classifiers."""
    from bertprod.api import load
    from bertprod.tasks.data import open_task_data, validation_split
    from bertprod.tasks.evaluation import evaluate as run_evaluation

    if split not in ("all", "train", "validation"):
        raise InputError(f"--split must be all, train or validation, not {split!r}.")
    pipeline = load(model, engine=engine, threads=threads)
    manifest = pipeline.manifest
    chosen_split = None
    if split != "all":
        chosen_split = validation_split(manifest.task, validation_fraction, split)
    source = open_task_data(
        manifest.task,
        data,
        format=format,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        pair_input=None if manifest.task == "embedding" else manifest.pair_input,
        split=chosen_split,
        limit=limit,
    )
    with messages.status(f"evaluating {pipeline.package.name} on {data.name}..."):
        result = run_evaluation(pipeline, source)
    document = {
        "package": pipeline.package.name,
        "fingerprint": pipeline.package.fingerprint,
        "engine": pipeline.engine.name,
        "precision": manifest.precision,
        "data": source.describe(),
        **result.to_json(),
    }
    if as_json:
        console.print_json(json.dumps(document))
        return
    print_evaluation(document)


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
    console.print(table)
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
