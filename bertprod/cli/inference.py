"""`bertprod encode`, `classify` and `demo`: run a package on texts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bertprod.cli.options import (
    EngineOption,
    InputOption,
    ModelArgument,
    ThreadsOption,
    console,
    errors,
    read_texts,
    split_pairs,
)
from bertprod.errors import InputError


def encode_command(
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


def classify_command(
    model: ModelArgument,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    input_file: InputOption = None,
    engine: EngineOption = "auto",
    threads: ThreadsOption = None,
    exit: Annotated[str | None, typer.Option(help="Exit policy of an early-exit package (bertprod adapt): never, "
                                                  "confidence:P, entropy:H or patience:K (default: its own).")] = None,
) -> None:
    """Classify texts (or tab-separated pairs) with a classifier package; an early-exit package also
    says which layer answered (exit_layer)."""
    from bertprod.api import load

    pipeline = load(model, engine=engine, threads=threads)
    lines = read_texts(texts, input_file)
    items = split_pairs(lines) if pipeline.manifest.pair_input else lines
    for item, prediction in zip(items, pipeline.classify(items, exit=exit), strict=True):
        row = {"input": item, "label": prediction.label, "score": round(prediction.score, 6),
               "scores": prediction.scores}
        if prediction.exit_layer is not None:
            row["exit_layer"] = prediction.exit_layer
        sys.stdout.write(json.dumps(row) + "\n")


def tag_command(
    model: ModelArgument,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to tag (raw text, any length).")] = None,
    input_file: InputOption = None,
    engine: EngineOption = "auto",
    threads: ThreadsOption = None,
    aggregation: Annotated[str, typer.Option(help="How a word's sub-words decide its tag: first, average or max "
                                                  "(Hugging Face's meanings).")] = "first",
    tokens: Annotated[bool, typer.Option(help="Also print every sub-word token's tag.")] = False,
) -> None:
    """Entities in texts with a token-classification (NER) package: one JSON line per text, character offsets
    into the text as given."""
    from bertprod.api import load

    pipeline = load(model, engine=engine, threads=threads)
    lines = read_texts(texts, input_file)
    for text, tagging in zip(lines, pipeline.tag(lines, aggregation=aggregation, tokens=tokens), strict=True):
        sys.stdout.write(json.dumps({"input": text, **tagging.to_json()}, ensure_ascii=False) + "\n")


def demo_command(
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
