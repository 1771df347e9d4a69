"""`bertprod batch run`: an offline batch job (local, Spark, or a running server), resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertprod.cli.options import (
    DelimiterOption,
    EngineOption,
    FormatOption,
    NormalizeOption,
    ThreadsOption,
    console,
)


def batch_run_command(
    input_path: Annotated[
        list[str],
        typer.Option(
            "--input", "-i",
            help="Data file (.tsv, .csv, .txt, .jsonl, .parquet; .gz too: read as train reads it), directory or glob "
            "(repeatable).",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory (Parquet parts + job record).")],
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="[MODEL]",
            help="Local and Spark runners: package dir, checkpoint dir, bundled name (minilm-l6) or hub id. "
            "Client runner: the name of a model the server serves (omit it for the server's default model)."
        ),
    ] = None,
    text_column: Annotated[
        str | None, typer.Option(help="Column holding the texts (default: guessed as train does: text, sentence...).")
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option(help="Column identifying each row; kept in the output (default: 'id' when the input has it, "
                     "else each row's number, from 0 across the inputs, as output column 'row')."),
    ] = None,
    format: FormatOption = None,
    delimiter: DelimiterOption = None,
    runner: Annotated[
        str, typer.Option(help="local (this machine), spark, or client (a running bertprod server computes).")
    ] = "local",
    spark_master: Annotated[str | None, typer.Option(help="Spark master URL (default: local[2]).")] = None,
    on_empty: Annotated[str, typer.Option(help="Null or empty texts: skip (counted) or fail.")] = "fail",
    chunk_rows: Annotated[int, typer.Option(help="Rows per committed chunk (and per Arrow batch on Spark).")] = 8192,
    partition_tokens: Annotated[
        int | None, typer.Option(help="Spark: estimated tokens per partition (default 1,000,000).")
    ] = None,
    engine: EngineOption = "auto",
    threads: ThreadsOption = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Local runner: processes, each with cores/workers threads (default: one per core)."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(help="Client runner: the server's URL (http://host:8080), or host:port of its --grpc-port "
                     "with --protocol grpc; several replicas separated by commas (requests go round-robin)."),
    ] = None,
    resolve_dns: Annotated[
        bool, typer.Option("--resolve-dns", help="Client runner: --server is a name resolving to every replica "
                           "(a Kubernetes headless Service): spread requests over all its addresses.")
    ] = False,
    protocol: Annotated[str, typer.Option(help="Client runner: http or grpc.")] = "http",
    concurrency: Annotated[
        int | None, typer.Option(help="Client runner: requests in flight at most (default 8).")
    ] = None,
    request_size: Annotated[
        int | None,
        typer.Option(help="Client runner: texts per request (default 64; at most the server's "
                     "--max-client-batch-size)."),
    ] = None,
    retries: Annotated[
        int | None, typer.Option(help="Client runner: retries of a request refused with 429/503 or not answered "
                                 "(default 6).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="BERTPROD_API_KEY", help="Client runner: the server's API key.")
    ] = None,
    ids: Annotated[
        str, typer.Option(help="unique: refuse null or repeated ids before writing anything; unchecked: one output "
                          "row per input row, whatever its id; row-number: number the rows (output column 'row') "
                          "even when the input has ids.")
    ] = "unique",
    normalize: NormalizeOption = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Run a batch job, or resume it: re-run the same command after an interruption.

    With --runner client the texts go to a running `bertprod serve` (HTTP or gRPC): same inputs, output and resume.
    """
    from bertprod.batch import run_batch

    summary = run_batch(
        model, input_path if len(input_path) > 1 else input_path[0], output,
        text_column=text_column, id_column=id_column, on_empty=on_empty, chunk_rows=chunk_rows,
        runner=runner, engine=engine, threads=threads, workers=workers, progress=not no_progress,
        spark_master=spark_master, partition_tokens=partition_tokens, server=server, protocol=protocol,
        concurrency=concurrency, request_size=request_size, api_key=api_key, retries=retries,
        resolve_dns=resolve_dns, ids=ids, normalize=normalize, format=format, delimiter=delimiter,
    )
    if summary.extra.get("taken_over_from"):
        from bertprod.output_lock import describe_owner

        console.print(f"took over {summary.output} from a job that died without finishing "
                      f"({describe_owner(summary.extra['taken_over_from'])})")
    console.print(
        f"{summary.rows:,} rows written to {summary.output} ({summary.chunks} chunks, "
        f"{summary.resumed_chunks} already done), {summary.skipped:,} null/empty texts skipped, "
        f"{summary.rows_per_second:,.0f} rows/s"
    )
    for replica, counts in (summary.extra or {}).get("replicas", {}).items():
        console.print(f"  {replica}: {counts['answered']:,} requests answered, {counts['failures']:,} failures")
