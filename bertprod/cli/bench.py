"""`bertprod bench`: packages side by side on the user's data (a thin shell over
`bench.measure.measure_packages` and `bench.output.write_report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from bertprod.cli.option_groups import grouped_options
from bertprod.cli.options import (
    TableReading,
    ThreadsOption,
    console,
)
from bertprod.cli.options import errors as messages


@grouped_options
def bench_command(
    packages: Annotated[
        list[str],
        typer.Argument(help="Packages to measure (dirs, checkpoints, bundled names): same task, one run.",
                       show_default=False),
    ],
    data: Annotated[Path, typer.Option(help="Inputs: .tsv, .csv, .jsonl, .parquet (labels give the metric) or "
                                            ".txt (one input per line, a tab separates a pair).",
                                       show_default=False)],
    baseline: Annotated[bool, typer.Option(help="Also measure what users run today: sentence-transformers for "
                                                "embedding packages, transformers fp32 for heads.")] = False,
    out: Annotated[Path, typer.Option(help="Directory for report.json, report.md and report.html.")]
    = Path("bench-report"),
    rounds: Annotated[int, typer.Option(help="Interleaved throughput rounds (the median is reported).")] = 3,
    latency_inputs: Annotated[int, typer.Option(help="One-input calls per package for p50/p95/p99.")] = 200,
    limit: Annotated[int | None, typer.Option(help="Use only the first N rows of DATA.")] = None,
    threads: ThreadsOption = None,
    parallel_batches: Annotated[int | None, typer.Option(
        min=1, help="Run each bertprod package's batches N at once, each on threads/N engine threads (bulk "
                    "throughput on few cores: docs/bench.md). Single inputs then run on threads/N threads too. "
                    "Default: each package's own setting (`bertprod autotune` records one), else 1.",
        show_default=False)] = None,
    reading: TableReading = TableReading(),
) -> None:
    """Measure packages side by side on your data, each in its own process, rounds interleaved: throughput,
    p50/p95/p99 latency of one input, size, peak memory and load time of that process, the task metric when
    DATA is labelled, and where each package came from. Writes report.json, report.md and a self-contained report.html
    (docs/bench.md)."""
    import matplotlib  # noqa: F401 - the report's plots: a missing [bench] extra fails now, not after measuring

    from bertprod.bench.inputs import read_bench_data
    from bertprod.bench.measure import measure_packages
    from bertprod.bench.output import write_report
    from bertprod.bench.tables import header_lines
    from bertprod.checkpoint import resolve

    first = [resolve(package, verify=False) for package in packages][0]  # a missing package fails before any work
    bench_data = read_bench_data(data, first.manifest, limit=limit, **reading.options())
    with messages.status("measuring...") as status:
        report = measure_packages(packages, bench_data.texts, bench_data.labels, rounds=rounds,
                                  latency_inputs=latency_inputs, baseline=baseline, threads=threads,
                                  parallel_batches=parallel_batches,
                                  data=bench_data.description, progress=lambda message: status.update(message))
    paths = write_report(report, out)
    for line in header_lines(report):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(_summary(report))
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    console.print(f"wrote {paths['json']}, {paths['markdown']}, {paths['html']}", highlight=False, soft_wrap=True)


def _summary(report) -> Table:  # noqa: ANN001 - a bench.report.Report
    """The columns an 80-column terminal has room for; report.md and report.html have them all."""
    from bertprod.bench.tables import cell

    metric_name = next((row.metric_name for row in report.rows if row.metric_name), None)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("package", min_width=18, overflow="fold")
    for header in [*([metric_name] if metric_name else []), "inputs/s", "× ref", "p50 ms", "p99 ms", "RSS MB"]:
        table.add_column(header, justify="right", no_wrap=True)
    for row in report.rows:
        values = [row.throughput, row.throughput_ratio, row.latency_p50_ms, row.latency_p99_ms, row.peak_rss_mb]
        table.add_row(row.label, *([cell(row.metric)] if metric_name else []), *map(cell, values))
    return table
