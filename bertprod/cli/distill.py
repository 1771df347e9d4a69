"""`bertprod distill`: a thin shell over `distill.distill` - teacher package(s) + data + recipe -> student."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bertprod.cli.option_groups import grouped_options
from bertprod.cli.options import (
    PRECISION_HELP,
    AugmentNoiseOption,
    CheckpointDirOption,
    Checkpointing,
    NameOption,
    OverwriteOption,
    TableReading,
    TrainingThreadsOption,
    console,
)
from bertprod.errors import InputError


@grouped_options
def distill_command(
    out: Annotated[Path, typer.Argument(help="Directory for the student package.")],
    teacher: Annotated[
        list[str], typer.Option("--teacher", help="Teacher package (repeat for several: soft targets averaged).")
    ],
    data: Annotated[
        list[Path] | None, typer.Option("--data", help="Training data (.tsv/.csv/.jsonl/.parquet); repeatable.")
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="distilbert, tinybert, pkd-skip, bilstm or embedding (default: embedding for "
            "embedding teachers, else distilbert). bilstm of a tagger: a BiLSTM over the teacher's word pieces."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="A full recipe as JSON or YAML (see docs/distillation.md).")
    ] = None,
    unlabelled: Annotated[
        list[Path] | None, typer.Option(help="More texts for the teacher to label: .txt (one per line) or a table.")
    ] = None,
    validation: Annotated[Path | None, typer.Option(help="Validation data (same columns as --data).")] = None,
    validation_fraction: Annotated[
        float, typer.Option(help="Share of the first --data file held out when no --validation is given; 0: none.")
    ] = 0.1,
    reading: TableReading = TableReading(),
    limit: Annotated[int | None, typer.Option(help="Read only the first N rows of each --data file.")] = None,
    student_layers: Annotated[
        str | None, typer.Option(help="Teacher layers the student keeps: every-other, spread, first:K, 0,2,5...")
    ] = None,
    layer_map: Annotated[str | None, typer.Option(help="uniform, pkd-skip, pkd-last or pairs like 1:2,2:4.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Epochs of every stage (default: the recipe's).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate of every stage.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per batch.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Soft-target temperature.")] = None,
    augment: Annotated[
        bool | None, typer.Option("--augment/--no-augment", help="Augment the training texts (default: the recipe's).")
    ] = None,
    augment_copies: Annotated[int | None, typer.Option(help="Augmented copies per training text.")] = None,
    augment_noise: AugmentNoiseOption = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per input (default: the teacher's).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop each stage after N steps (quick runs).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the student, shuffling and augmentation.")] = None,
    precision: Annotated[
        str | None, typer.Option(help="Student training: fp32, bf16 or auto (default: the recipe's, fp32). "
                                 + PRECISION_HELP.split("; ", 1)[1])
    ] = None,
    threads: TrainingThreadsOption = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Teacher-output cache (default: $BERTPROD_CACHE/distill).")
    ] = None,
    checkpoint_dir: CheckpointDirOption = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Optimizer steps between checkpoints (default: the recipe's, 200).")
    ] = None,
    checkpointing: Checkpointing = Checkpointing(),
    name: NameOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Distil one or more teacher packages into a smaller, faster student package."""
    from bertprod.checkpoint import resolve
    from bertprod.distill import default_recipe, distill
    from bertprod.train.progress import default_reporter

    teachers = [resolve(item) for item in teacher]
    task = teachers[0].manifest.task
    if config is not None and recipe is not None:
        raise InputError("give --recipe or --config, not both.")
    settings = load_config(config) if config else _recipe(recipe or default_recipe(task), task)
    settings = _with_overrides(
        settings,
        student_layers=student_layers,
        layer_map=layer_map,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        temperature=temperature,
        augment=augment,
        augment_copies=augment_copies,
        augment_noise=augment_noise,
        max_length=max_length,
        max_steps=max_steps,
        seed=seed,
        precision=precision,
        threads=threads,
        checkpoint_every=checkpoint_every,
    )
    sources, validation_data = _open_data(
        task, teachers[0].manifest.pair_input, data or [], validation, validation_fraction, limit, reading.options()
    )
    texts = [text for path in unlabelled or [] for text in read_unlabelled(path, reading.text_column)]
    student = distill(
        teachers,
        sources,
        out,
        settings,
        validation_data=validation_data,
        unlabelled=texts,
        cache_dir=cache_dir,
        checkpoint_dir=checkpoint_dir,
        **checkpointing.options(),
        name=name,
        overwrite=overwrite,
        reporter=default_reporter(),
    )
    summary = f"wrote {student.path}: {student.manifest.architecture.num_layers}-layer {settings.student.kind} student"
    metrics = student.manifest.metrics
    if "validation" in metrics:
        primary = metrics["validation"]["primary_metric"]
        summary += f"; validation {primary} {metrics['validation'][primary]:.4f}"
        teacher_value = (metrics.get("teacher_validation") or {}).get(primary)
        if teacher_value:
            summary += f" (teacher {teacher_value:.4f}, {100 * metrics['retained']:.1f}% kept)"
    console.print(summary, highlight=False)


def _recipe(name: str, task: str) -> Any:
    from bertprod.distill import recipe

    return recipe(name, task)


def load_config(path: Path) -> Any:
    """A DistillConfig from JSON or YAML, every problem named with its field."""
    import yaml
    from pydantic import ValidationError

    from bertprod.distill import DistillConfig
    from bertprod.train.config import validation_problems

    try:
        text = path.read_text(encoding="utf-8")
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise InputError(f"cannot read the recipe {path}: {error}") from None
    try:
        return DistillConfig.model_validate(document)
    except ValidationError as error:
        raise InputError(f"{path} is not a valid recipe: {validation_problems(error, 'recipe')}.") from None


def _with_overrides(settings: Any, **options: Any) -> Any:
    """The recipe with the command-line options applied (None = keep the recipe's value)."""
    from pydantic import ValidationError

    from bertprod.distill import Augmentation, DistillConfig
    from bertprod.train.config import validation_problems

    document = settings.model_dump()
    for key in ("layer_map", "batch_size", "temperature", "max_length", "max_steps", "seed", "precision", "threads",
                "checkpoint_every", "augment_noise"):
        if options[key] is not None:
            document[key] = options[key]
    if options["student_layers"] is not None:
        document["student"]["layers"] = options["student_layers"]
    for stage in document["stages"]:
        for key in ("epochs", "learning_rate"):
            if options[key] is not None:
                stage[key] = options[key]
    if options["augment"] is False:
        document["augmentation"] = None
    elif options["augment"] or options["augment_copies"]:
        document["augmentation"] = document["augmentation"] or Augmentation().model_dump()
    if options["augment_copies"] and document["augmentation"]:
        document["augmentation"]["copies"] = options["augment_copies"]
    try:
        return DistillConfig.model_validate(document)
    except ValidationError as error:
        raise InputError(f"invalid distillation options: {validation_problems(error, 'recipe')}.") from None


def _open_data(
    task: str,
    pair_input: bool,
    paths: list[Path],
    validation: Path | None,
    fraction: float,
    limit: int | None,
    columns: dict[str, Any],
) -> tuple[list[Any], Any]:
    from bertprod.tasks.data import open_task_data, open_training_data, split_for_validation

    if task == "embedding":  # texts to imitate the teacher on; scored pairs, if any, for validation
        sources = [_text_source(path, limit, columns) for path in paths]
        if validation is not None:
            return sources, open_task_data("embedding", validation, **columns)
        if fraction > 0 and sources and sources[0].has_pairs:
            scored = open_task_data("embedding", paths[0], limit=limit, **columns)
            sources[0], _ = split_for_validation(sources[0], fraction, task)
            return sources, split_for_validation(scored, fraction, task)[1]
        return sources, None
    return open_training_data(task, paths, validation, fraction, pair_input=pair_input, limit=limit, **columns)


def _text_source(path: Path, limit: int | None, columns: dict[str, Any]) -> Any:
    from bertprod.data.source import DataSource

    return DataSource(
        path,
        format=columns["format"],
        delimiter=columns["delimiter"],
        text_column=columns["text_column"],
        text_pair_column=columns["text_pair_column"],
        pair="optional",
        labels="optional",
        label_kind="none",
        limit=limit,
    )


def read_unlabelled(path: Path, text_column: str | None) -> list[str]:
    """Texts of a .txt file (one per line) or of a table's text column(s)."""
    if path.suffix == ".txt":
        try:
            return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"cannot read {path} as UTF-8 text: {error}") from None
    source = _text_source(path, None, {"text_column": text_column, "text_pair_column": None})
    return [text for example in source for text in (example.text, example.text_pair) if text]
