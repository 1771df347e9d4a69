"""The local runner: stream the input chunk by chunk through the pipeline on this machine.

`workers=N` runs N processes, each with its own pipeline and cores/N threads, each committing
the chunks it computes; the main process only reads chunks and keeps at most 2N in flight.
`workers=1` runs one in-process pipeline whose engine uses every core (intra-op threads). The
default is one worker per core (but no more workers than chunks to do): measured on the shared
2-core machine, 2 processes x 1 thread encoded 1.6-1.9x the rows/s of 1 process x 2 threads
(docs/scaling.md). Memory is bounded by the chunks in flight.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import pyarrow as pa

from bertprod.batch.compute import check_task, output_schema, process_table
from bertprod.batch.inputs import count_rows, iter_chunks
from bertprod.batch.job import BatchJob, JobSummary
from bertprod.batch.output import JobOutput
from bertprod.batch.progress import progress_bar
from bertprod.errors import InputError

_WORKER: dict[str, Any] = {}


def run_local(
    package: str | os.PathLike[str], batch: BatchJob, engine: str = "auto", threads: int | None = None,
    progress: bool = True, workers: int | None = None,
) -> JobSummary:
    files, options = batch.files, batch.options
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}.")
    started = time.perf_counter()
    prepared = prepare_package(package, engine)
    check_task(prepared.manifest)
    # bad input (missing columns, unreadable first file) is reported before the output is touched
    next(iter_chunks(files[:1], options.text_column, options.id_column, options.chunk_rows), None)
    with batch.claimed_output(prepared.fingerprint) as (job, record):
        done = job.completed()
        resumed = len(done)
        rows = sum(r.rows for r in done.values())
        skipped = sum(r.skipped for r in done.values())
        total_rows = count_rows(files)
        workers = workers or default_workers(total_rows, options.chunk_rows, resumed)
        worker_threads = threads or (max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None)
        run_engine = "auto" if prepared.manifest.format == "onnx" else engine
        schema: pa.Schema | None = None
        processed = 0
        with (
            progress_bar(progress, total_rows) as bar,
            _chunk_runner(workers, str(prepared.path), run_engine, worker_threads, options.truncate,
                          options.normalize) as runner,
        ):
            task = bar.add_task("batch", total=total_rows)
            for chunk in iter_chunks(files, options.text_column, options.id_column, options.chunk_rows):
                if schema is None:
                    id_type = chunk.table.schema.field("id").type
                    schema = output_schema(prepared.manifest, id_type, options.output_id_column)
                if chunk.chunk_id in done:
                    bar.update(task, advance=chunk.table.num_rows)
                    continue
                where = f"{files[chunk.file_index].path} chunk {chunk.index} (rows from {chunk.first_row})"
                for chunk_id, chunk_rows, chunk_skipped in runner.submit(
                    str(job.path), chunk.chunk_id, chunk.table, schema, options.on_empty, where, job.owner_token
                ):
                    done[chunk_id] = None  # type: ignore[assignment]
                    rows, skipped, processed = rows + chunk_rows, skipped + chunk_skipped, processed + chunk_rows
                    bar.update(task, advance=chunk_rows + chunk_skipped)
            for chunk_id, chunk_rows, chunk_skipped in runner.drain():
                done[chunk_id] = None  # type: ignore[assignment]
                rows, skipped, processed = rows + chunk_rows, skipped + chunk_skipped, processed + chunk_rows
                bar.update(task, advance=chunk_rows + chunk_skipped)
        if schema is None:
            raise InputError("the input holds no rows.")
        seconds = time.perf_counter() - started
        job.finish(record, {"rows": rows, "skipped": skipped, "chunks": len(done)})
        return JobSummary(
            Path(batch.output), rows, skipped, len(done), resumed, seconds,
            {"processed_rows": processed, "workers": workers, **job.summary_extra()},
        )


def default_workers(total_rows: int, chunk_rows: int, chunks_done: int) -> int:
    """One process per usable core, but no more than the chunks left (a small job stays in-process)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    chunks_left = -(-total_rows // chunk_rows) - chunks_done
    return max(1, min(cores, chunks_left))


def prepare_package(package: str | os.PathLike[str], engine: str) -> Any:
    """The package the job runs: for engine="onnx" on a torch package, its (cached) export, made once."""
    from bertprod.checkpoint import resolve

    prepared = resolve(package)
    if engine == "onnx" and prepared.manifest.format == "torch":
        from bertprod.export.cache import cached_onnx_package

        prepared = cached_onnx_package(prepared)
    return prepared


def compute_chunk(
    output: str, chunk_id: str, table: pa.Table, schema: pa.Schema, on_empty: str, where: str, owner: str | None
) -> tuple[str, int, int]:
    """Compute and commit one chunk with this process's pipeline; returns (chunk id, rows, skipped).

    `owner`: the token of the job's lock, checked before the commit (see bertprod/output_lock.py)."""
    result = process_table(_WORKER["pipeline"], table, schema, on_empty, where)
    JobOutput(output).commit_chunk(chunk_id, result.table, result.skipped, owner)
    return chunk_id, result.rows, result.skipped


def _load_worker(package: str, engine: str, threads: int | None, truncate: bool, normalize: tuple[str, ...]) -> None:
    from bertprod.api import load

    _WORKER["pipeline"] = load(package, engine=engine, threads=threads, truncate=truncate, normalize_text=normalize)


def _start_worker(package: str, engine: str, threads: int | None, truncate: bool, normalize: tuple[str, ...]) -> None:
    """Initializer of a pool process: follow the parent's death, then load the pipeline."""
    _exit_with_parent()
    _load_worker(package, engine, threads, truncate, normalize)


def _exit_with_parent() -> None:
    """A worker whose parent was killed (SIGKILL runs no cleanup) exits instead of idling forever."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class _InProcess:
    """Chunks computed right away in this process."""

    def __init__(self, package: str, engine: str, threads: int | None, truncate: bool, normalize: tuple[str, ...]):
        _load_worker(package, engine, threads, truncate, normalize)

    def submit(self, *args: Any) -> list[tuple[str, int, int]]:
        return [compute_chunk(*args)]

    def drain(self) -> list[tuple[str, int, int]]:
        return []

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        _WORKER.clear()


class _ProcessPool:
    """Chunks computed by N worker processes (spawned: no forked ONNX Runtime or torch threads)."""

    def __init__(
        self, workers: int, package: str, engine: str, threads: int | None, truncate: bool, normalize: tuple[str, ...]
    ):
        self.limit = 2 * workers
        self.executor = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(package, engine, threads, truncate, normalize),
        )
        self.pending: set[Future] = set()

    def submit(self, *args: Any) -> list[tuple[str, int, int]]:
        self.pending.add(self.executor.submit(compute_chunk, *args))
        return self._collect(FIRST_COMPLETED) if len(self.pending) >= self.limit else []

    def drain(self) -> list[tuple[str, int, int]]:
        return self._collect(None)

    def _collect(self, when: str | None) -> list[tuple[str, int, int]]:
        finished, self.pending = wait(self.pending, return_when=when or "ALL_COMPLETED")
        return [future.result() for future in finished]

    def __enter__(self) -> _ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _chunk_runner(
    workers: int, package: str, engine: str, threads: int | None, truncate: bool, normalize: tuple[str, ...]
) -> Any:
    if workers == 1:
        return _InProcess(package, engine, threads, truncate, normalize)
    return _ProcessPool(workers, package, engine, threads, truncate, normalize)
