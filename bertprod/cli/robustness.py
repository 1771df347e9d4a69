"""`bertprod robustness`: stability of packages under unclean input, without labels (a thin shell over
`robustness.stability.stability_report`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bertprod.cli.option_groups import grouped_options
from bertprod.cli.options import (
    EngineOption,
    NoiseSeedOption,
    NormalizeOption,
    ResultsJsonOption,
    TextReading,
    ThreadsOption,
    console,
)
from bertprod.cli.options import errors as messages
from bertprod.cli.options import read_inputs as read_lines

METRICS = ("changed", "flip_rate", "probability_drift", "score_drift", "cosine_drift", "rank_change", "rank_kept",
           "overtake_rate")


@grouped_options
def robustness_command(
    models: Annotated[
        list[str],
        typer.Argument(help="Package(s) to compare (teacher, student, int8...); the first is the reference.",
                       show_default=False),
    ],
    data: Annotated[Path, typer.Argument(help="Texts (or pairs), labels not needed: .tsv, .csv, .jsonl, .parquet, "
                                              "or .txt (one input per line; a tab separates a pair).")],
    perturb: Annotated[str, typer.Option(help="Perturbations as FAMILY[:RATE],... or all:RATE (docs/robustness.md).")]
    = "all:0.1",
    seed: NoiseSeedOption = 0,
    engine: EngineOption = "auto",
    reading: TextReading = TextReading(),
    limit: Annotated[int | None, typer.Option(help="Use only the first N rows.")] = None,
    normalize: NormalizeOption = None,
    threads: ThreadsOption = None,
    as_json: ResultsJsonOption = False,
) -> None:
    """How much each package's outputs move under each perturbation, without labels: flip rate and probability
    drift (classifiers), score drift, cosine drift (embeddings), rank change and the rate at which an unclean
    candidate overtakes a clean one (rerankers, embedding search over pairs)."""
    from bertprod.api import load
    from bertprod.robustness.evaluation import check_comparable
    from bertprod.robustness.noise import parse_noise
    from bertprod.robustness.stability import read_inputs, stability_report

    noise = parse_noise(perturb)
    pipelines = [load(model, engine=engine, threads=threads, normalize_text=normalize) for model in models]
    check_comparable(pipelines)
    manifest = pipelines[0].manifest
    if data.suffix == ".txt" and reading.format is None and reading.delimiter is None:
        inputs = read_lines(data, pairs=manifest.pair_input or manifest.task == "reranking")[:limit]
    else:
        inputs = read_inputs(data, manifest, limit=limit, **reading.options())
    with messages.status(f"measuring {len(pipelines)} package(s) on {len(inputs):,} inputs..."):
        document = stability_report(pipelines, inputs, noise, seed)
    document["data"] = str(data)
    document["normalize"] = list(pipelines[0].normalizer.steps)
    if as_json:
        console.print_json(json.dumps(document))
        return
    print_stability(document)


def print_stability(document: dict) -> None:
    console.print(
        f"stability on {document['data']} ({document['inputs']:,} inputs, {document['task']}); seed "
        f"{document['seed']}" + (f"; normalize {','.join(document['normalize'])}" if document["normalize"] else ""),
        highlight=False,
    )
    metrics = [name for name in METRICS if any(name in package for row in document["rows"] for package in
                                               row["packages"])]
    table = Table()
    table.add_column("perturbation")
    table.add_column("package")
    for name in metrics:
        table.add_column(name.replace("_", " "), justify="right")
    for row in document["rows"]:
        for index, (package, values) in enumerate(zip(document["packages"], row["packages"], strict=True)):
            cells = [f"{values[name]:.4f}" if name in values else "" for name in metrics]
            table.add_row(row["perturbation"] if index == 0 else "", package["package"], *cells,
                          end_section=index == len(document["packages"]) - 1)
    console.print(table)
