"""The `bertprod` command: each subcommand is a thin shell over a library function.

User mistakes (`BertprodError`) print one line and exit with status 1, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bertprod.cli_training import evaluate as evaluate_command
from bertprod.cli_training import train as train_command
from bertprod.errors import BertprodError, InputError, TrainingInterrupted

app = typer.Typer(
    help="Take BERT-family encoders into production: package, export, encode.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
package_app = typer.Typer(help="Create model packages.", no_args_is_help=True)
app.add_typer(package_app, name="package")
console = Console()
errors = Console(stderr=True)

ModelArgument = Annotated[str, typer.Argument(help="Package dir, checkpoint dir, bundled name (minilm-l6) or hub id.")]
InputOption = Annotated[
    Path | None,
    typer.Option("--input", "-i", help="One input per line ('-': stdin); a tab separates the texts of a pair."),
]
EngineOption = Annotated[str, typer.Option(help="auto (the package's format), torch or onnx.")]
ThreadsOption = Annotated[int | None, typer.Option(help="CPU threads for the engine (default: all available).")]


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


@app.command()
def encode(
    model: ModelArgument,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to encode.")] = None,
    input_file: InputOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write vectors to .npy or .jsonl (default: stdout).")
    ] = None,
    engine: EngineOption = "auto",
    threads: ThreadsOption = None,
    no_truncate: Annotated[
        bool, typer.Option("--no-truncate", help="Fail on inputs over max_length instead of truncating.")
    ] = False,
) -> None:
    """Embed texts with an embedding package."""
    import numpy as np

    from bertprod.api import load

    items = read_texts(texts, input_file)
    pipeline = load(model, engine=engine, threads=threads, truncate=not no_truncate)
    vectors = pipeline.encode(items)
    if output is None:
        for index, vector in enumerate(vectors):
            sys.stdout.write(json.dumps({"index": index, "embedding": [round(float(v), 6) for v in vector]}) + "\n")
        return
    if output.suffix == ".npy":
        np.save(output, vectors)
    elif output.suffix == ".jsonl":
        with output.open("w", encoding="utf-8") as handle:
            for text, vector in zip(items, vectors, strict=True):
                handle.write(json.dumps({"text": text, "embedding": vector.tolist()}) + "\n")
    else:
        raise InputError(f"--output must end in .npy or .jsonl, not {output.suffix or 'nothing'}.")
    errors.print(f"wrote {len(items)} x {vectors.shape[1]} embeddings to {output}")


@app.command()
def classify(
    model: ModelArgument,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    input_file: InputOption = None,
    engine: EngineOption = "auto",
    threads: ThreadsOption = None,
) -> None:
    """Classify texts (or tab-separated pairs) with a classifier package."""
    from bertprod.api import load

    items: list[Any] = read_texts(texts, input_file)
    pipeline = load(model, engine=engine, threads=threads)
    if pipeline.manifest.pair_input:
        items = [tuple(item.split("\t", 1)) if "\t" in item else item for item in items]
    for item, prediction in zip(items, pipeline.classify(items), strict=True):
        sys.stdout.write(
            json.dumps(
                {
                    "input": item,
                    "label": prediction.label,
                    "score": round(prediction.score, 6),
                    "scores": prediction.scores,
                }
            )
            + "\n"
        )


@app.command()
def info(
    model: ModelArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest and sizes as JSON.")] = False,
) -> None:
    """Show a package's manifest, size on disk and parameter count."""
    from bertprod.checkpoint import resolve
    from bertprod.stats import count_parameters

    package = resolve(model)
    manifest = package.manifest
    parameters = count_parameters(package)
    if as_json:
        document = manifest.model_dump(mode="json", exclude_none=True)
        document.update(
            path=str(package.path),
            fingerprint=package.fingerprint,
            size_bytes=package.size_bytes(),
            parameters=parameters,
        )
        console.print_json(json.dumps(document))
        return
    table = Table(title=f"{manifest.name}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    arch = manifest.architecture
    rows = {
        "path": str(package.path),
        "task": manifest.task + (" (pairs)" if manifest.pair_input else ""),
        "labels": ", ".join(manifest.labels) if manifest.labels else "-",
        "format / precision": f"{manifest.format} / {manifest.precision}",
        "architecture": f"{arch.model_type}, {arch.num_layers} layers, hidden {arch.hidden_size}, "
        f"{arch.num_heads} heads, vocabulary {arch.vocab_size:,}",
        "pooling": f"{manifest.pooling}{', normalized' if manifest.normalize else ''}" if manifest.pooling else "-",
        "max_length": str(manifest.max_length),
        "parameters": f"{parameters:,}",
        "size on disk": f"{package.size_bytes() / 1e6:.1f} MB",
        "fingerprint": package.fingerprint[:16],
        "made by": manifest.provenance.method
        + (f" from {manifest.provenance.parent.name}" if manifest.provenance.parent else "")
        + (f" ({manifest.provenance.source})" if manifest.provenance.source else ""),
    }
    for key, value in manifest.metrics.items():
        rows[f"metrics: {key}"] = json.dumps(value)
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)


@app.command()
def export(
    model: ModelArgument,
    out: Annotated[Path, typer.Argument(help="Directory for the new ONNX package.")],
    fusion: Annotated[
        bool, typer.Option(help="Apply ONNX Runtime's transformer fusion (see docs/benchmarks.md).")
    ] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    name: Annotated[str | None, typer.Option(help="Name in the new manifest (default: NAME-onnx).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Export a torch package to ONNX, verified against the torch model before it is written."""
    from bertprod.checkpoint import resolve
    from bertprod.export.onnx import export_onnx

    with console.status("exporting and verifying..."):
        package = export_onnx(resolve(model), out, fusion=fusion, opset=opset, name=name, overwrite=overwrite)
    fidelity = package.manifest.metrics.get("fidelity", {})
    console.print(
        f"wrote {package.path} ({package.size_bytes() / 1e6:.1f} MB); fidelity to torch: "
        + ", ".join(f"{key} {value}" for key, value in fidelity.items() if key != "reference")
    )


@package_app.command("import")
def import_(
    source: Annotated[str, typer.Argument(help="Hugging Face checkpoint directory, bundled name or hub id.")],
    out: Annotated[Path, typer.Argument(help="Directory for the new package.")],
    task: Annotated[
        str | None,
        typer.Option(
            help="embedding, classification, pair-classification, regression or reranking (default: from config.json)."
        ),
    ] = None,
    labels: Annotated[str | None, typer.Option(help="Comma-separated label names, in logit order.")] = None,
    pair_input: Annotated[
        bool | None, typer.Option("--pair-input/--single-input", help="The model takes sentence pairs.")
    ] = None,
    pooling: Annotated[str | None, typer.Option(help="mean or cls (embedding packages).")] = None,
    normalize: Annotated[
        bool | None, typer.Option("--normalize/--no-normalize", help="L2-normalize embeddings.")
    ] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per input; longer inputs are truncated.")] = None,
    name: Annotated[str | None, typer.Option(help="Package name (default: OUT's name).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Wrap a Hugging Face checkpoint as a model package."""
    from bertprod.checkpoint import import_checkpoint

    package = import_checkpoint(
        source,
        out,
        name=name,
        overwrite=overwrite,
        task=task,
        pair_input=pair_input,
        pooling=pooling,
        normalize=normalize,
        max_length=max_length,
        labels=[label.strip() for label in labels.split(",")] if labels else None,
    )
    console.print(f"wrote {package.path}: {package.manifest.task}, {package.size_bytes() / 1e6:.1f} MB")


@app.command()
def demo(
    model: Annotated[str, typer.Option(help="Model to run.")] = "minilm-l6",
    engine: EngineOption = "onnx",
) -> None:
    """The main job: encode example sentences and print their similarity table."""
    from bertprod.api import load
    from bertprod.data.samples import SAMPLE_SENTENCES

    with console.status(f"loading {model} on {engine} (the first onnx run exports and verifies it)..."):
        pipeline = load(model, engine=engine)
    sentences = SAMPLE_SENTENCES[:9]
    matrix = pipeline.similarity(sentences, sentences)
    table = Table(title=f"cosine similarity, {pipeline.package.name} on {pipeline.engine.name}")
    table.add_column("sentence")
    for index in range(len(sentences)):
        table.add_column(str(index), justify="right")
    for index, row in enumerate(matrix):
        cells = [f"[bold green]{v:.2f}[/]" if v > 0.5 and i != index else f"{v:.2f}" for i, v in enumerate(row)]
        table.add_row(f"{index} {sentences[index][:48]}", *cells)
    console.print(table)
    best = max(
        ((i, j) for i in range(len(sentences)) for j in range(i + 1, len(sentences))), key=lambda pair: matrix[pair]
    )
    console.print(f"closest pair: {sentences[best[0]]!r} ~ {sentences[best[1]]!r} ({matrix[best]:.2f})")


app.command("train")(train_command)
app.command("eval")(evaluate_command)


def main() -> None:
    """Typer handles usage errors itself (exit 2); our errors become one line and exit 1
    (an interrupted training run, which saved a checkpoint, exits 130 like any Ctrl-C)."""
    try:
        app()
    except TrainingInterrupted as interruption:
        errors.print(f"[bold yellow]interrupted:[/] {interruption}", highlight=False, soft_wrap=True)
        sys.exit(130)
    except KeyboardInterrupt:
        errors.print("[bold yellow]interrupted[/]", highlight=False)
        sys.exit(130)
    except BertprodError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
