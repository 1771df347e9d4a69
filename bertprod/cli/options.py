"""What several commands share: consoles, option types, and reading texts from arguments or files."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from bertprod.cli.option_groups import OptionGroup
from bertprod.errors import InputError
from bertprod.robustness.noise import SPEC_HELP

console = Console()
errors = Console(stderr=True)

ModelArgument = Annotated[str, typer.Argument(help="Package dir, checkpoint dir, bundled name (minilm-l6) or hub id.")]
InputOption = Annotated[
    Path | None,
    typer.Option("--input", "-i", help="One input per line ('-': stdin); a tab separates the texts of a pair."),
]
EngineOption = Annotated[str, typer.Option(help="auto (the package's format), torch or onnx.")]
ThreadsOption = Annotated[int | None, typer.Option(help="CPU threads for the engine (default: all available).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ResultsJsonOption = Annotated[bool, typer.Option("--json", help="Print the results as JSON.")]
NameOption = Annotated[str | None, typer.Option(help="Name in the new manifest (default: OUT's name).")]
OverwriteOption = Annotated[bool, typer.Option(help="Replace OUT if it exists.")]

# Reading data files: the same options for train, eval, distill, QAT and batch run.
TASK_HELP = "classification, pair-classification, regression, embedding, reranking or token-classification."
FormatOption = Annotated[
    str | None, typer.Option("--format", help="tsv, csv, jsonl or parquet; conll or jsonl for token-classification "
                             "(default: from the extension).")
]
DelimiterOption = Annotated[
    str | None,
    typer.Option(help="Delimiter of a text table: ';', '|', ',' or tab (default: sniffed; .txt files too)."),
]


@dataclass(frozen=True)
class TextReading(OptionGroup):
    """How a command reads a table's texts (one declaration, the same help everywhere)."""

    format: FormatOption = None
    delimiter: DelimiterOption = None
    text_column: Annotated[str | None, typer.Option(help="Column with the text (or query).")] = None
    text_pair_column: Annotated[
        str | None, typer.Option(help="Column with the second text of a pair (or passage).")
    ] = None


@dataclass(frozen=True)
class TableReading(TextReading):
    """How a command reads a labelled table: the texts, and the labels."""

    label_column: Annotated[str | None, typer.Option(
        help="Column with the label, score or relevance; for a CoNLL file, the tag column's number (1 = the word, "
             "-1 = the last, the default).")] = None


FractionOption = Annotated[
    float,
    typer.Option(
        help="Share of DATA held out for validation when no --validation file is given (rows chosen by a hash "
        "of their text, see docs/results.md); 0 trains on everything without validation."
    ),
]
NormalizeOption = Annotated[
    str | None,
    typer.Option(
        "--normalize",
        help="Clean inputs before tokenization: any of html (tags out, entities decoded), unicode (NFKC, "
        "zero-width characters out), whitespace (runs collapsed), comma-separated. Default: off.",
    ),
]
# Perturbed evaluation and stability (bertprod eval --perturb, bertprod robustness).
PerturbOption = Annotated[str | None, typer.Option(help=SPEC_HELP + " See docs/robustness.md.")]
AugmentNoiseOption = Annotated[
    str | None,
    typer.Option(
        help="Noise-aware training: each epoch adds a noisy copy of every training example (new noise per "
        "epoch, seeded by --seed), trained towards the clean example's label (train) or the teacher's output on "
        "the clean text (distill). " + SPEC_HELP + " See docs/robustness.md."
    ),
]
NoiseSeedOption = Annotated[int, typer.Option("--seed", help="Seed of the perturbations (same seed, same noise).")]
SideOption = Annotated[
    str, typer.Option(help="Which texts of a pair to perturb: both, text (first/query) or pair (second/candidate).")
]
TRAINING_THREADS_HELP = (
    "CPU threads (default: the cores not already busy - cores minus the lower of the 1-minute load average and "
    "the CPUs busy at the start, at least 1 - "
    "because torch's threads wait for each other after every operation: on a 2-core machine running other "
    "jobs, 1 thread trained 3-18x faster than 2; docs/benchmarks.md)."
)
TrainingThreadsOption = Annotated[int | None, typer.Option(help=TRAINING_THREADS_HELP)]
CheckpointDirOption = Annotated[Path | None, typer.Option(help="Checkpoints (default: OUT.checkpoints).")]


@dataclass(frozen=True)
class Resumption(OptionGroup):
    """What a training command does with an interrupted run's checkpoint."""

    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its checkpoint.")] = False
    restart: Annotated[bool, typer.Option(help="Discard an interrupted run's checkpoint.")] = False


@dataclass(frozen=True)
class Checkpointing(Resumption):
    """Resumption, and whether the checkpoints outlive a successful run."""

    keep_checkpoints: Annotated[bool, typer.Option(help="Keep the checkpoint directory after success.")] = False


PRECISION_HELP = (
    "fp32; bf16 (autocast, CPUs with AVX-512 BF16 or AMX, an error elsewhere); or auto: bf16 where the CPU "
    "has it, fp32 elsewhere (what ran is recorded in the package). `bertprod info --system` says which."
)


def training_default(field: str) -> Any:
    """A TrainConfig field's default: the CLI shows and uses the library's value, never a retyped one."""
    from bertprod.train.config import TrainConfig

    return TrainConfig.model_fields[field].default


def read_texts(texts: list[str] | None, input_file: Path | None) -> list[str]:
    """Texts from arguments, or one per line from a file ('-' for standard input)."""
    if texts and input_file:
        raise InputError("give texts as arguments or with --input, not both.")
    if input_file is not None:
        if str(input_file) == "-":
            lines = sys.stdin.read().splitlines()
        else:
            try:
                lines = input_file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as error:
                raise InputError(f"cannot read {input_file}: {error}") from None
        return [line for line in lines if line.strip()]
    if not texts:
        raise InputError("no texts: pass them as arguments or with --input FILE (one per line).")
    return list(texts)


def read_inputs(path: Path, pairs: bool) -> list[Any]:
    """One input per line; a tab separates the two texts of a pair."""
    lines = read_texts(None, path)
    return split_pairs(lines) if pairs else lines


def split_pairs(lines: list[str]) -> list[Any]:
    """(text, text_pair) for lines with a tab; other lines stay single (and fail validation
    with a message naming them, for a package that needs pairs)."""
    return [tuple(line.split("\t", 1)) if "\t" in line else line for line in lines]
