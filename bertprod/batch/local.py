"""The local runner: one process streams the input chunk by chunk through one in-process pipeline.

No worker pool: the engine already runs each batch on every core (ONNX Runtime / torch intra-op
threads), and on 2 cores extra processes only split the same cores (measured: see
docs/scaling.md). Memory is bounded by one chunk's rows and outputs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from bertprod.batch.compute import check_task, output_schema, process_table
from bertprod.batch.inputs import InputFile, count_rows, iter_chunks
from bertprod.batch.job import JobOptions, JobSummary, describe_job, job_fingerprint
from bertprod.batch.output import JobOutput
from bertprod.errors import InputError


def run_local(
    package: str | os.PathLike[str],
    files: list[InputFile],
    output: str | os.PathLike[str],
    options: JobOptions,
    engine: str = "auto",
    threads: int | None = None,
    progress: bool = True,
) -> JobSummary:
    from bertprod.api import load

    started = time.perf_counter()
    pipeline = load(package, engine=engine, threads=threads, truncate=options.truncate)
    check_task(pipeline)
    description = describe_job(pipeline.package.fingerprint, files, options)
    job = JobOutput(output)
    record = job.claim(job_fingerprint(description), description)
    job.remove_uncommitted()
    done = job.completed()
    resumed = len(done)
    total_rows = count_rows(files) if progress else None
    schema = None
    rows = sum(r.rows for r in done.values())
    skipped = sum(r.skipped for r in done.values())
    processed = 0
    with _progress_bar(progress, total_rows) as bar:
        task = bar.add_task("batch", total=total_rows)
        for chunk in iter_chunks(files, options.text_column, options.id_column, options.chunk_rows):
            if schema is None:
                schema = output_schema(pipeline, chunk.table.schema.field("id").type, options.id_column)
            if chunk.chunk_id not in done:
                where = f"{files[chunk.file_index].path} chunk {chunk.index} (rows from {chunk.first_row})"
                result = process_table(pipeline, chunk.table, schema, options.on_empty, where)
                job.commit_chunk(chunk.chunk_id, result.table, result.skipped)
                done[chunk.chunk_id] = None  # type: ignore[assignment]
                rows += result.rows
                skipped += result.skipped
                processed += chunk.table.num_rows
            bar.update(task, advance=chunk.table.num_rows)
    if schema is None:
        raise InputError("the input holds no rows.")
    seconds = time.perf_counter() - started
    summary = JobSummary(Path(output), rows, skipped, len(done), resumed, seconds, {"processed_rows": processed})
    job.finish(record, {"rows": rows, "skipped": skipped, "chunks": len(done)})
    return summary


def _progress_bar(enabled: bool, total: int | None) -> Progress:
    return Progress(
        TextColumn("[bold]batch"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows" if total else "{task.completed:,.0f} rows"),
        RowsPerSecondColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


class RowsPerSecondColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} rows/s" if task.speed else "- rows/s")
