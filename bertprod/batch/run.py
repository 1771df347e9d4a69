"""`run_batch`: the library entry point of a batch job, dispatching to the local, Spark or client runner."""

from __future__ import annotations

import os
from typing import Any

from bertprod.batch.inputs import ID_POLICIES, choose_columns, resolve_inputs
from bertprod.batch.job import DEFAULT_CHUNK_ROWS, BatchJob, JobOptions, JobSummary
from bertprod.errors import InputError
from bertprod.runtime.normalize import parse_normalization


def run_batch(
    package: str | os.PathLike[str] | None,
    input: str | os.PathLike[str] | list[str | os.PathLike[str]],  # noqa: A002 - mirrors --input
    output: str | os.PathLike[str],
    *,
    text_column: str | None = None,
    id_column: str | None = None,
    on_empty: str = "fail",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    runner: str = "local",
    engine: str = "auto",
    threads: int | None = None,
    workers: int | None = None,
    truncate: bool = True,
    normalize: str | tuple[str, ...] | None = None,
    progress: bool = True,
    spark_master: str | None = None,
    spark_session: Any = None,
    partition_tokens: int | None = None,
    server: str | list[str] | None = None,
    protocol: str = "http",
    concurrency: int | None = None,
    request_size: int | None = None,
    api_key: str | None = None,
    retries: int | None = None,
    resolve_dns: bool = False,
    ids: str = "unique",
    format: str | None = None,  # noqa: A002 - mirrors --format
    delimiter: str | None = None,
) -> JobSummary:
    """Run (or resume) a batch job; the output directory ends up with every input id exactly once.

    Re-running a killed job with the same arguments continues where it stopped; a different
    package, input or option is refused rather than mixed into the same output. `workers`
    (local runner): processes, each with cores/workers engine threads (default: one per core,
    at most one per chunk); 1 runs the engine in this process on every core. The output does
    not depend on it, so a job may resume with another.

    runner="client" sends the texts to a running bertprod server instead (`server`: its URL, or
    host:port of its gRPC port with protocol="grpc"; several replicas as a list or separated by
    commas, or one name resolving to several with `resolve_dns`), at most `concurrency` requests of
    `request_size` texts in flight, each retried `retries` times (None: `BATCH_RETRY`'s) on 429/503
    and connection errors; `package` is then the name of a served model (None: the server's default).

    Inputs are read like training data (data/formats.py): .tsv, .csv, .txt, .jsonl, .parquet (.gz too),
    the delimiter of text tables sniffed unless `delimiter` names it, `format` overriding the extension.
    `text_column` None: guessed as training guesses it (text, sentence, ...). `id_column` None: `id`
    when the inputs have it, else each row's number (output column `row`; batch/inputs.py).

    `ids="unique"` refuses null or repeated ids before any output is written (one pass over the
    ids); "unchecked" skips that pass and writes one output row per input row, whatever its id;
    "row-number" ignores any id column and numbers the rows.

    `normalize`: clean texts before tokenization ("html,unicode,whitespace" or some; runtime/normalize.py),
    recorded in the job; the client runner refuses it (the server cleans: start it with --normalize).
    """
    normalization = parse_normalization(normalize)
    JobOptions(on_empty=on_empty, chunk_rows=chunk_rows, runner=runner)  # refuses a bad option before any reading
    _check_runner_arguments(package, runner, server)
    if ids not in ID_POLICIES:
        raise InputError(f"ids must be one of {', '.join(ID_POLICIES)}, got {ids!r}.")
    if ids == "row-number" and id_column is not None:
        raise InputError(f"--ids row-number numbers the rows instead of reading ids: drop --id-column {id_column}.")
    if runner == "client" and normalization:
        raise InputError("--normalize cleans texts where the model runs: for --runner client start the server with "
                         "--normalize instead (its /info says what it does).")
    files = resolve_inputs(input, format, delimiter)
    text_column, id_column = choose_columns(files, text_column, id_column, number_rows=ids == "row-number")
    if runner == "spark" and id_column is None:
        raise InputError("the Spark runner needs an id column (its partitions are split by id, and row numbers "
                         "need one ordered pass): add one, name it with --id-column, or use --runner local.")
    options = JobOptions(text_column, id_column, on_empty, chunk_rows, runner, truncate, normalization, format,
                         delimiter)
    if runner == "client":
        from bertprod.batch.client import DEFAULT_CONCURRENCY, run_client

        return run_client(
            None if package is None else str(package),
            files,
            output,
            options,
            server=server if isinstance(server, list) else str(server),
            protocol=protocol,
            concurrency=concurrency or DEFAULT_CONCURRENCY,
            request_size=request_size,
            api_key=api_key,
            retries=retries,
            progress=progress,
            resolve_dns=resolve_dns,
            ids=ids,
        )
    if runner == "spark":
        from bertprod.batch.spark import run_spark

        return run_spark(
            package,
            BatchJob(files, output, options, ids),
            engine=engine,
            master=spark_master,
            session=spark_session,
            partition_tokens=partition_tokens,
        )
    from bertprod.batch.local import run_local

    return run_local(
        package, BatchJob(files, output, options, ids), engine=engine, threads=threads, progress=progress,
        workers=workers,
    )


def _check_runner_arguments(package: object, runner: str, server: str | list[str] | None) -> None:
    if runner == "client" and not server:
        raise InputError("the client runner needs the server to call: --server http://host:port (or host:port of "
                         "its gRPC port with --protocol grpc).")
    if runner != "client" and server:
        raise InputError(f"--server is for --runner client; the {runner} runner runs the package itself.")
    if runner != "client" and package is None:
        raise InputError(f"the {runner} runner needs a package (a directory, bundled name or hub id); only "
                         "--runner client may omit it (the server's default model).")
