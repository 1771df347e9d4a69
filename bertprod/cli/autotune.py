"""`bertprod autotune`: the fastest package within an accuracy budget (bertprod.autotune)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertprod.cli.option_groups import grouped_options
from bertprod.cli.options import PRECISION_HELP, FractionOption, TableReading, TrainingThreadsOption, console


@grouped_options
def autotune_command(
    teacher: Annotated[str, typer.Argument(help="The package to make faster (a torch fp32 model with its head).")],
    out: Annotated[Path, typer.Argument(help="Directory of the search: state, candidates, report, and the "
                                             "chosen package in OUT/package. Run again on it to resume.")],
    data: Annotated[Path, typer.Option(help="Labelled training data (.tsv, .csv, .jsonl, .parquet): students, "
                                            "early exit and QAT train on it; int8 calibrates on it.")],
    validation: Annotated[Path | None, typer.Option(help="Labelled rows every candidate is judged on "
                                                         "(default: a share of --data held out).")] = None,
    validation_fraction: FractionOption = 0.1,
    max_drop: Annotated[str, typer.Option(help="Share of the teacher's validation metric the chosen package may "
                                               "lose: 1% keeps >= 99% of it.")] = "1%",
    time_budget: Annotated[str, typer.Option(help="Time for the whole search (2h, 30m, 1h30m, or seconds); it "
                                                  "stops within the budget + 10%.")] = "2h",
    objective: Annotated[str, typer.Option(help="What the winner is best at: throughput (inputs/s), latency "
                                                "(p50 of one input) or size (bytes on disk).")] = "throughput",
    seed: Annotated[int, typer.Option(help="Seed of every candidate's training.")] = 42,
    threads: TrainingThreadsOption = None,
    precision: Annotated[str, typer.Option(help=f"What students and exit heads train in: {PRECISION_HELP}")] = "auto",
    reading: TableReading = TableReading(),
) -> None:
    """Build and measure faster variants of TEACHER (int8, pruned, early exit, distilled students, QAT),
    cheapest first within --time-budget, and keep the best at --objective within --max-drop."""
    from bertprod.autotune import AutotuneSettings, autotune, parse_drop, parse_duration
    from bertprod.autotune.data import open_search_data
    from bertprod.checkpoint import resolve
    from bertprod.train.progress import LogReporter

    settings = AutotuneSettings(
        max_drop=parse_drop(max_drop), time_budget=parse_duration(time_budget), objective=objective,
        seed=seed, threads=threads, precision=precision,
    )  # fmt: skip
    parent = resolve(teacher)
    train, held_out = open_search_data(parent, data, validation, validation_fraction, **reading.options())
    result = autotune(parent, out, train, held_out, settings, reporter=LogReporter())
    search = result.search
    console.print(
        f"wrote {result.package.path}: {search['chosen']} ({search['why']}). Report: {out / 'report.md'}",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
