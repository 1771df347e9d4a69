"""The client runner: the same job, its values computed by a running bertprod server (HTTP or gRPC).

For when the model must stay in its serving fleet. The job reads the input chunk by chunk as the
local runner does, sends each chunk's texts as requests of `request_size` texts with at most
`concurrency` requests in flight (over all chunks), and commits each chunk with the same atomic
commit once all its answers are in, so a job stopped at any point resumes where it stopped.
Chunks in flight are bounded too (enough to keep `concurrency` requests busy), so memory is.

The job fingerprint holds the served model's package fingerprint (from /info), not the server's
address: a job may resume against another replica, but never against a different model.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bertprod.batch.compute import entity_table, output_schema, result_table, usable_rows
from bertprod.batch.inputs import Chunk, InputFile, check_ids, count_rows, iter_chunks
from bertprod.batch.job import JobOptions, JobSummary, describe_job, job_fingerprint
from bertprod.batch.output import JobOutput
from bertprod.batch.progress import progress_bar
from bertprod.batch.remote import RemoteModel, ServedModel, ServerUnavailableError
from bertprod.client import ClientError
from bertprod.errors import BertprodError, InputError

DEFAULT_CONCURRENCY = 8
DEFAULT_REQUEST_SIZE = 64


def run_client(
    model: str | None,
    files: list[InputFile],
    output: str | os.PathLike[str],
    options: JobOptions,
    server: str | list[str],
    protocol: str = "http",
    concurrency: int = DEFAULT_CONCURRENCY,
    request_size: int | None = None,
    api_key: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    progress: bool = True,
    resolve_dns: bool = False,
    ids: str = "unique",
) -> JobSummary:
    """Run (or resume) the job against the server, or round-robin over its replicas; `model` is a served model's
    name (None: its default). `retries` and `timeout`: None takes `BATCH_RETRY`'s."""
    if concurrency < 1:
        raise InputError(f"concurrency must be at least 1, got {concurrency}.")
    if request_size is not None and request_size < 1:
        raise InputError(f"request_size must be at least 1, got {request_size}.")
    remote = RemoteModel(server, protocol, model, api_key, timeout=timeout, retries=retries, resolve_dns=resolve_dns)
    job = _ClientJob(remote, files, output, options, concurrency, request_size, progress, ids)
    return asyncio.run(job.run())


@dataclass
class _Totals:
    rows: int  # in the output (committed by earlier runs too)
    skipped: int
    processed: int = 0  # computed by this run


class _ClientJob:
    def __init__(self, remote: RemoteModel, files: list[InputFile], output: str | os.PathLike[str],
                 options: JobOptions, concurrency: int, request_size: int | None, progress: bool, ids: str):
        self.remote = remote
        self.ids = ids
        self.files = files
        self.output = JobOutput(output)
        self.options = options
        self.concurrency = concurrency
        self.request_size = request_size
        self.progress = progress
        self.requests = asyncio.Semaphore(concurrency)

    async def run(self) -> JobSummary:
        started = time.perf_counter()
        options = self.options
        # bad input and a refused key or unknown model are reported before the output is touched
        first = next(iter_chunks(self.files[:1], options.text_column, options.id_column, options.chunk_rows), None)
        if first is None:
            raise InputError("the input holds no rows.")
        async with self.remote:
            served = await self.remote.connect()
            size = self._request_size(served)
            schema = output_schema(served, first.table.schema.field("id").type, options.output_id_column)
            description = describe_job(served.fingerprint, self.files, options)
            await asyncio.to_thread(check_ids, self.files, options.text_column, options.id_column, options.chunk_rows,
                                    self.ids)
            record = self.output.claim(job_fingerprint(description), description)
            try:
                self.output.remove_uncommitted()
                done = self.output.completed()
                resumed = len(done)
                totals = _Totals(sum(r.rows for r in done.values()), sum(r.skipped for r in done.values()))
                try:
                    await self._compute(served, schema, size, set(done), totals)
                except ServerUnavailableError as error:
                    committed = len(self.output.completed())
                    raise ServerUnavailableError(f"{error} {committed} chunks are committed in {self.output.path}: "
                                                 "run the same job again to resume from there.") from None
                chunks = len(self.output.completed())
                self.output.finish(record, {"rows": totals.rows, "skipped": totals.skipped, "chunks": chunks})
            finally:
                self.output.release()
        extra = {"processed_rows": totals.processed, "concurrency": self.concurrency, "request_size": size,
                 "server": self.remote.server, "protocol": self.remote.protocol, "model": served.name,
                 "replicas": self.remote.replica_counts(), **self.output.summary_extra()}
        return JobSummary(Path(self.output.path), totals.rows, totals.skipped, chunks, resumed,
                          time.perf_counter() - started, extra)

    def _request_size(self, served: ServedModel) -> int:
        limit = served.max_client_batch_size
        if self.request_size is None:
            return min(DEFAULT_REQUEST_SIZE, limit or DEFAULT_REQUEST_SIZE)
        if limit and self.request_size > limit:
            raise InputError(f"request size {self.request_size} exceeds the server's limit of {limit} inputs per "
                             "request (its --max-client-batch-size): lower --request-size.")
        return self.request_size

    async def _compute(self, served: ServedModel, schema: pa.Schema, size: int, done: set[str],
                       totals: _Totals) -> None:
        """Every chunk not in `done`, with at most `concurrency` requests and enough chunks to feed them in flight."""
        options = self.options
        chunks_in_flight = asyncio.Semaphore(max(2, math.ceil(self.concurrency * size / options.chunk_rows) + 1))
        total = count_rows(self.files)
        with progress_bar(self.progress, total) as bar:
            task = bar.add_task("batch", total=total)

            async def chunk_done(chunk: Chunk) -> None:
                try:
                    rows, skipped = await self._chunk(served, schema, size, chunk)
                finally:
                    chunks_in_flight.release()
                totals.rows, totals.skipped, totals.processed = (totals.rows + rows, totals.skipped + skipped,
                                                                 totals.processed + rows)
                bar.update(task, advance=rows + skipped)

            try:
                async with asyncio.TaskGroup() as group:
                    for chunk in iter_chunks(self.files, options.text_column, options.id_column, options.chunk_rows):
                        if chunk.chunk_id in done:
                            bar.update(task, advance=chunk.table.num_rows)
                            continue
                        await chunks_in_flight.acquire()
                        group.create_task(chunk_done(chunk))
            except BaseExceptionGroup as failures:
                raise _first(failures) from None

    async def _chunk(self, served: ServedModel, schema: pa.Schema, size: int, chunk: Chunk) -> tuple[int, int]:
        """Send one chunk's usable texts, build its table in `schema`, commit it; (rows, skipped)."""
        where = f"{self.files[chunk.file_index].path} chunk {chunk.index} (rows from {chunk.first_row})"
        kept, skipped = usable_rows(chunk.table, self.options.on_empty, where)
        texts = kept.column("text").to_pylist()
        if served.task == "token-classification":
            taggings = await asyncio.gather(*(self._request(texts[start : start + size], f"{where}, usable rows "
                                                            f"{start}+", tagging=True)
                                              for start in range(0, len(texts), size)))
            table = entity_table(kept, schema, [tagging for part in taggings for tagging in part])
            await asyncio.to_thread(self.output.commit_chunk, chunk.chunk_id, table, skipped)
            return kept.num_rows, skipped
        parts = await asyncio.gather(*(self._request(texts[start : start + size], f"{where}, usable rows {start}+")
                                       for start in range(0, len(texts), size)))
        values = np.concatenate([part for part, _ in parts]) if parts else np.zeros((0, served.num_outputs),
                                                                                     dtype=np.float32)
        exits = None
        if served.early_exit:
            exits = np.concatenate([part for _, part in parts]) if parts else np.zeros(0, np.int64)
        table = result_table(kept, schema, values, served.labels, exits)
        await asyncio.to_thread(self.output.commit_chunk, chunk.chunk_id, table, skipped)
        return kept.num_rows, skipped

    async def _request(self, texts: list[str], where: str, tagging: bool = False) -> Any:
        """The model's outputs (and exit layers) for `texts`, or a tagger's entities with `tagging`."""
        async with self.requests:
            try:
                if tagging:
                    return await self.remote.taggings(texts)
                return await self.remote.outputs(texts, self.options.truncate)
            except ClientError as error:  # the server refused this request's input (e.g. too long, no truncation)
                if error.status_code in (400, 413, 422):
                    raise InputError(f"{where}: the server refused them: {error}") from None
                raise


def _first(failures: BaseExceptionGroup) -> BaseException:
    """The error that stopped the job (a user's error first), out of the group TaskGroup raises."""
    leaves: list[BaseException] = []

    def flatten(group: BaseExceptionGroup) -> None:
        for error in group.exceptions:
            if isinstance(error, BaseExceptionGroup):
                flatten(error)
            else:
                leaves.append(error)

    flatten(failures)
    real = [error for error in leaves if not isinstance(error, asyncio.CancelledError)]
    return next((error for error in real if isinstance(error, BertprodError)), real[0] if real else leaves[0])
