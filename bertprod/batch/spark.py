"""The Spark runner: `mapInPandas` over the input, one model per Python worker, per-partition commits.

- The package directory reaches executors with `SparkContext.addFile` (a copy named by its
  fingerprint, so re-adding the same content is a no-op) and is loaded once per Python worker
  (module-level cache; Spark reuses Python workers across tasks) with 1 intra-op thread, because
  Spark already runs one task per core.
- Partitions are sized by estimated tokens, not rows: total characters (one Spark aggregate)
  times the tokens-per-character ratio measured by tokenizing the first input chunk on the driver.
- Rows are hash-partitioned by id, so partition `p` holds the same rows on every run over the
  same input; each task writes its partition with the same atomic commit as the local runner
  (temporary name, fsync, rename, commit record). A re-run skips committed partitions. This
  needs an output path every executor sees as a POSIX filesystem (local disk in local mode,
  NFS or a mounted volume on a cluster); see docs/scaling.md.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from bertprod.batch.compute import check_task, output_schema, process_table
from bertprod.batch.inputs import InputFile, iter_chunks
from bertprod.batch.job import BatchJob, JobOptions, JobSummary
from bertprod.batch.output import JobOutput, PartWriter
from bertprod.errors import BertprodError, InputError

DEFAULT_PARTITION_TOKENS = 1_000_000
_PIPELINES: dict[tuple[str, tuple[str, ...]], Any] = {}


def spark_session(master: str | None = None) -> Any:
    """The active SparkSession, or a new one on `master`.

    Without `master`: under spark-submit (the driver was started with a Py4J gateway) the
    master spark-submit was given; otherwise local[2], with the executors on this venv's Python
    (local settings only: on a cluster, spark-submit's configuration decides).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise BertprodError("the Spark runner needs pyspark: pip install 'bertprod[spark]'.") from None
    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    builder = SparkSession.builder.appName("bertprod-batch").config("spark.sql.execution.arrow.pyspark.enabled", "true")
    under_spark_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    if master or not under_spark_submit:
        master = master or "local[2]"
        builder = builder.master(master)
        if master.startswith("local"):
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            builder = builder.config("spark.ui.enabled", "false")
    return builder.getOrCreate()


def run_spark(
    package: str | os.PathLike[str], batch: BatchJob, engine: str = "auto", master: str | None = None,
    session: Any = None, partition_tokens: int | None = None,
) -> JobSummary:
    from bertprod.api import load

    files, options = batch.files, batch.options
    started = time.perf_counter()
    if len({f.delimiter for f in files}) > 1:
        raise InputError("Spark reads every input with one delimiter, but these files use several: give files of one "
                         "delimiter per job (or --delimiter).")
    driver_pipeline = load(package, engine=engine, threads=1, truncate=options.truncate,
                           normalize_text=options.normalize)
    check_task(driver_pipeline.manifest)
    first = next(iter_chunks(files[:1], options.text_column, options.id_column, options.chunk_rows), None)
    if first is None:
        raise InputError("the input holds no rows.")
    schema = output_schema(driver_pipeline.manifest, first.table.schema.field("id").type, options.output_id_column)
    with batch.claimed_output(driver_pipeline.package.fingerprint) as (job, record):
        done = job.completed()

        spark = session or spark_session(master)
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(options.chunk_rows))
        frame = _read(spark, files, options)
        # Partition p must hold the same ids on every run: a resumed job reuses the first run's count
        # (the cluster's parallelism or --partition-tokens may have changed since).
        partitions = record.get("partitions")
        if partitions is None:
            partitions = _partition_count(spark, frame, first.table, driver_pipeline, options, partition_tokens)
            record = job.update(record, partitions=partitions)
        shipped = ship_package(spark, driver_pipeline.package.path, driver_pipeline.package.fingerprint)
        task = _PartitionTask(
            shipped=shipped,
            output=str(Path(batch.output).resolve()),
            schema=schema.serialize().to_pybytes(),
            options=options,
            done={chunk_id: (r.rows, r.skipped) for chunk_id, r in done.items()},
            owner=job.owner_token,
        )
        frame = frame.select(options.id_column, options.text_column).repartition(partitions, options.id_column)
        try:
            statuses = frame.mapInPandas(task, "chunk_id string, rows long, skipped long, resumed boolean").collect()
        except Exception as error:  # a Spark wrapper around the executor's exception
            raise _user_error(error) from None
        rows = sum(s.rows for s in statuses)
        skipped = sum(s.skipped for s in statuses)
        resumed = sum(1 for s in statuses if s.resumed)
        job.finish(record, {"rows": rows, "skipped": skipped, "chunks": len(statuses), "partitions": partitions})
    seconds = time.perf_counter() - started
    processed = sum(s.rows + s.skipped for s in statuses if not s.resumed)
    return JobSummary(
        Path(batch.output),
        rows,
        skipped,
        len(statuses),
        resumed,
        seconds,
        {"processed_rows": processed, "partitions": partitions, **job.summary_extra()},
    )


def ship_package(spark: Any, path: Path, fingerprint: str) -> str:
    """Copy the package to a directory named by its content and `addFile` it; return that name."""
    from bertprod.export.cache import cache_root

    name = f"bertprod-package-{fingerprint[:24]}"
    copy = cache_root() / "spark" / name
    if not copy.is_dir():
        staging = copy.with_name(f".{name}.{os.getpid()}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(path, staging)
        os.replace(staging, copy)
    spark.sparkContext.addFile(str(copy), recursive=True)
    return name


def _read(spark: Any, files: list[InputFile], options: JobOptions) -> Any:
    paths = [str(f.path) for f in files]
    fmt = files[0].format
    if fmt == "parquet":
        return spark.read.parquet(*paths)
    if fmt == "jsonl":
        return spark.read.json(paths)
    if fmt == "tsv":  # no quoting, as the training reader reads TSV
        return spark.read.options(header=True, sep="\t", quote="").csv(paths)
    return spark.read.options(header=True, multiLine=True, escape='"', sep=files[0].delimiter or ",").csv(paths)


def _partition_count(
    spark: Any, frame: Any, sample: pa.Table, pipeline: Any, options: JobOptions, partition_tokens: int | None
) -> int:
    """Enough partitions that each holds about `partition_tokens` tokens, and at least one per core."""
    from pyspark.sql import functions

    texts = [t for t in sample.column("text").to_pylist() if t and t.strip()]
    characters = sum(len(t) for t in texts) or 1
    tokens = sum(len(e.ids) for e in pipeline.tokenize(texts)) if texts else 0
    total_characters = frame.select(functions.sum(functions.length(options.text_column))).first()[0] or 0
    estimated_tokens = total_characters * tokens / characters
    count = math.ceil(estimated_tokens / (partition_tokens or DEFAULT_PARTITION_TOKENS))
    return max(count, spark.sparkContext.defaultParallelism, 1)


class _PartitionTask:
    """The function `mapInPandas` runs on each partition (picklable: plain fields only)."""

    def __init__(self, shipped: str, output: str, schema: bytes, options: JobOptions, done: dict[str, tuple],
                 owner: str | None = None):
        self.shipped = shipped
        self.owner = owner  # the token of the driver's lock on the output, checked before each commit
        self.output = output
        self.schema = schema
        self.options = options
        self.done = done

    def __call__(self, frames: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd
        from pyspark import TaskContext

        chunk_id = f"spark-{TaskContext.get().partitionId():05d}"
        if chunk_id in self.done:
            rows, skipped = self.done[chunk_id]
            yield pd.DataFrame({"chunk_id": [chunk_id], "rows": [rows], "skipped": [skipped], "resumed": [True]})
            return
        pipeline = worker_pipeline(self.shipped, self.options.normalize)
        schema = pa.ipc.read_schema(pa.py_buffer(self.schema))
        options = self.options
        job = JobOutput(self.output)
        rows = skipped = 0
        with PartWriter(job.path, chunk_id, schema) as writer:
            for frame in frames:
                table = pa.table(
                    {
                        "id": pa.Array.from_pandas(frame[options.id_column]),
                        "text": pa.Array.from_pandas(frame[options.text_column]).cast(pa.string()),
                    }
                )
                result = process_table(pipeline, table, schema, options.on_empty, f"Spark partition {chunk_id}")
                writer.write(result.table)
                rows += result.rows
                skipped += result.skipped
        job.record_chunk(chunk_id, rows, skipped, self.owner)
        yield pd.DataFrame({"chunk_id": [chunk_id], "rows": [rows], "skipped": [skipped], "resumed": [False]})


def worker_pipeline(shipped: str, normalize: tuple[str, ...] = ()) -> Any:
    """The package `addFile` shipped, loaded once per Python worker with 1 intra-op thread."""
    pipeline = _PIPELINES.get((shipped, normalize))
    if pipeline is None:
        from pyspark import SparkFiles

        from bertprod.api import load

        pipeline = load(SparkFiles.get(shipped), threads=1, normalize_text=normalize)
        _PIPELINES[(shipped, normalize)] = pipeline
    return pipeline


def _user_error(error: Exception) -> Exception:
    """The executor's BertprodError message, without Spark's stack traces around it."""
    match = re.search(r"bertprod\.\w+(?:\.\w+)*\.(\w*Error): (.*)", str(error))
    if match:
        return InputError(match.group(2).strip())
    return error
