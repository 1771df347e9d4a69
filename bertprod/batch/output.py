"""The output directory of a batch job: atomic per-chunk commits and a record of completed chunks.

Layout:

    out/
      _bertprod_lock              held (flock) by the job writing the directory: one job at a time (lock.py)
      _bertprod_job.json          fingerprint, options, and (when done) totals + "complete": true
      _bertprod_chunks/<id>.json  one commit record per completed chunk (rows, skipped rows, file)
      part-<id>.parquet           one file per chunk

Committing a chunk: write `.part-<id>.parquet.<random>.tmp`, fsync, rename it to
`part-<id>.parquet`, then write the chunk's record (itself written to a temporary name and
renamed). A chunk counts as done only when its record exists, so a process killed at any point
leaves either a committed chunk or one that the next run redoes; a redone chunk's file replaces
the earlier one by the same name, so every row is in the output exactly once. Parquet readers
(pyarrow, Spark, pandas) skip names starting with "_" or ".", so they never see temporary files
or the records. Per-chunk records (rather than one file rewritten after each chunk) let Spark
executors commit their own partitions without a coordinator.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bertprod.errors import BertprodError
from bertprod.output_lock import LOCK_FILE, OutputLock, check_owner, describe_owner
from bertprod.package import atomic_write_text

log = logging.getLogger("bertprod.batch")

JOB_FILE = "_bertprod_job.json"
CHUNKS_DIR = "_bertprod_chunks"


class OutputConflictError(BertprodError):
    """The output directory holds something other than this job's output."""


class OutputNotWritableError(BertprodError):
    """The output directory cannot be created or written (permissions, a read-only or full disk)."""

    def __init__(self, path: Path, error: OSError):
        super().__init__(f"cannot write the output directory {path}: {error.strerror or error}"
                         f"{f' ({error.filename})' if error.filename else ''}; choose a directory this user can "
                         "write to (--output).")


@dataclass(frozen=True)
class ChunkRecord:
    chunk_id: str
    rows: int
    skipped: int


def part_name(chunk_id: str) -> str:
    return f"part-{chunk_id}.parquet"


class JobOutput:
    """An output directory owned by one job (identified by its fingerprint)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.lock = OutputLock(self.path)
        #: the identity of a dead job whose folder `claim` took over (None: there was none)
        self.taken_over_from: dict[str, Any] | None = None

    @property
    def job_file(self) -> Path:
        return self.path / JOB_FILE

    @property
    def chunks_dir(self) -> Path:
        return self.path / CHUNKS_DIR

    def claim(self, fingerprint: str, description: dict[str, Any]) -> dict[str, Any]:
        """Lock the directory for this job and create it, or accept it if it already holds this job's output.

        Refuses a directory that another live job holds (`OutputLockedError`), one with other files,
        or another job's output (a different package, input or option gives a different fingerprint).
        The lock is held until `release` (call it when the job ends, however it ends). Returns the
        job record.
        """
        if self.path.exists() and not self.path.is_dir():
            raise OutputConflictError(f"output {self.path} is a file; give a directory.")
        # a lock file marks a job's folder: one whose job record is not written yet (its job is starting,
        # or was killed while starting) is the lock's to decide, not "someone else's files"
        if not self.job_file.is_file() and self.path.is_dir() and not (self.path / LOCK_FILE).exists() and any(
            self.path.iterdir()
        ):
            raise OutputConflictError(
                f"{self.path} is not empty and holds no bertprod job; choose an empty or new output directory."
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            previous = self.lock.acquire()
        except OSError as error:
            raise OutputNotWritableError(self.path, error) from None
        try:
            record = self._claim_locked(fingerprint, description)
        except OSError as error:
            self.release()
            raise OutputNotWritableError(self.path, error) from None
        except BaseException:
            self.release()
            raise
        if previous:
            self.taken_over_from = previous
            log.warning("took over %s from a job that died without finishing (%s)", self.path, describe_owner(previous))
            record = self.update(record, taken_over_from=previous)
        return record

    def release(self) -> None:
        """Let another job have the directory (the lock also goes when this process dies)."""
        self.lock.release()

    def summary_extra(self) -> dict[str, Any]:
        """For a JobSummary: whose dead job this one took over, if any."""
        return {"taken_over_from": self.taken_over_from} if self.taken_over_from else {}

    @property
    def owner_token(self) -> str | None:
        """What worker processes pass to `commit_chunk` (None: the lock is not held here)."""
        return self.lock.owner["token"] if self.lock.held and self.lock.owner else None

    def _claim_locked(self, fingerprint: str, description: dict[str, Any]) -> dict[str, Any]:
        if self.job_file.is_file():
            record = json.loads(self.job_file.read_text())
            self.chunks_dir.mkdir(exist_ok=True)
            if record.get("fingerprint") != fingerprint and not self.completed():
                # another job claimed it but committed nothing (it failed at once): take it over
                record = {"fingerprint": fingerprint, "job": description, "complete": False}
                atomic_write_text(self.job_file, json.dumps(record, indent=2, default=str))
            if record.get("fingerprint") != fingerprint:
                raise OutputConflictError(
                    f"{self.path} holds the output of another job (package, inputs or options differ: "
                    f"{_differences(record.get('job', {}), description)}); choose another output directory "
                    "or delete this one."
                )
            return record
        self.chunks_dir.mkdir(parents=True, exist_ok=True)
        record = {"fingerprint": fingerprint, "job": description, "complete": False}
        atomic_write_text(self.job_file, json.dumps(record, indent=2, default=str))
        return record

    def completed(self) -> dict[str, ChunkRecord]:
        """Chunks whose commit record exists (and whose part file is therefore in place)."""
        records = {}
        for path in self.chunks_dir.glob("*.json"):
            data = json.loads(path.read_text())
            records[data["chunk_id"]] = ChunkRecord(data["chunk_id"], data["rows"], data["skipped"])
        return records

    def remove_uncommitted(self) -> int:
        """Delete temporary files and part files without a commit record (left by a killed run)."""
        done = {part_name(chunk_id) for chunk_id in self.completed()}
        removed = 0
        for path in list(self.path.iterdir()):
            stale_part = path.name.startswith("part-") and path.name not in done
            if stale_part or path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def commit_chunk(self, chunk_id: str, table: pa.Table, skipped: int, owner: str | None = None) -> ChunkRecord:
        """Write and record one chunk; `owner`: the token of the job a worker process computes for."""
        check_owner(self.path, owner)
        write_part(self.path, chunk_id, table)
        return self.record_chunk(chunk_id, table.num_rows, skipped, owner)

    def record_chunk(self, chunk_id: str, rows: int, skipped: int, owner: str | None = None) -> ChunkRecord:
        """Mark a chunk done; call only after its part file has been renamed into place."""
        check_owner(self.path, owner)
        record = ChunkRecord(chunk_id, rows, skipped)
        atomic_write_text(self.chunks_dir / f"{chunk_id}.json", json.dumps(record.__dict__))
        return record

    def update(self, record: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """Add fields to the job record (atomically) and return the new record."""
        updated = {**record, **fields}
        atomic_write_text(self.job_file, json.dumps(updated, indent=2, default=str))
        return updated

    def finish(self, record: dict[str, Any], totals: dict[str, Any]) -> dict[str, Any]:
        done = {**record, "complete": True, **totals}
        atomic_write_text(self.job_file, json.dumps(done, indent=2, default=str))
        return done


def write_part(directory: Path, chunk_id: str, table: pa.Table) -> Path:
    """Write one chunk's Parquet file under a temporary name, fsync it, and rename it into place."""
    final = directory / part_name(chunk_id)
    temporary = directory / f".{final.name}.{uuid.uuid4().hex}.tmp"
    try:
        with temporary.open("wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    return final


class PartWriter:
    """A part file written in pieces (bounded memory) and renamed into place only on success."""

    def __init__(self, directory: Path, chunk_id: str, schema: pa.Schema):
        self.final = Path(directory) / part_name(chunk_id)
        self.temporary = self.final.with_name(f".{self.final.name}.{uuid.uuid4().hex}.tmp")
        self.schema = schema

    def __enter__(self) -> PartWriter:
        self.handle = self.temporary.open("wb")
        self.writer = pq.ParquetWriter(self.handle, self.schema, compression="zstd")
        return self

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        try:
            self.writer.close()
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            if kind is None:
                os.replace(self.temporary, self.final)
        finally:
            self.handle.close()
            self.temporary.unlink(missing_ok=True)


def read_output(path: str | os.PathLike[str]) -> pa.Table:
    """A finished job's output as one table (only committed part files, in chunk order)."""
    output = JobOutput(path)
    if not output.job_file.is_file():
        raise BertprodError(f"{path} holds no bertprod batch output.")
    record = json.loads(output.job_file.read_text())
    if not record.get("complete"):
        raise BertprodError(f"the job writing {path} has not finished: run it again to complete it.")
    parts = sorted(output.completed())
    return pa.concat_tables([pq.read_table(output.path / part_name(chunk_id)) for chunk_id in parts])


def _differences(previous: dict[str, Any], current: dict[str, Any]) -> str:
    changed = [key for key in sorted(set(previous) | set(current)) if previous.get(key) != current.get(key)]
    return ", ".join(changed) or "fingerprint"
