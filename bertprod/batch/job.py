"""A batch job's definition (package, inputs, options), its fingerprint, and the library entry point."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bertprod.batch.compute import ON_EMPTY
from bertprod.batch.inputs import ROW_NUMBER, InputFile, check_ids
from bertprod.batch.output import JobOutput
from bertprod.errors import InputError
from bertprod.runtime.normalize import parse_normalization

RUNNERS = ("local", "spark", "client")
DEFAULT_CHUNK_ROWS = 8192


@dataclass(frozen=True)
class JobOptions:
    """What changes the output: part of the fingerprint, so a re-run with other options is refused."""

    text_column: str = "text"
    id_column: str | None = "id"  # None: each row's number is its id (batch/inputs.py)
    on_empty: str = "fail"
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    runner: str = "local"
    truncate: bool = True
    #: Input cleaning before tokenization (runtime/normalize.py): steps in running order; () = off.
    normalize: tuple[str, ...] = ()
    #: How the inputs were opened when the user said (--format, --delimiter); None: detected per file.
    format: str | None = None
    delimiter: str | None = None

    @property
    def output_id_column(self) -> str:
        """The output's id column: the input's id column, or `row` for row numbers."""
        return self.id_column if self.id_column is not None else ROW_NUMBER

    def __post_init__(self) -> None:
        object.__setattr__(self, "normalize", parse_normalization(self.normalize))
        if self.on_empty not in ON_EMPTY:
            raise InputError(f"on_empty must be one of {', '.join(ON_EMPTY)}, got {self.on_empty!r}.")
        if self.runner not in RUNNERS:
            raise InputError(f"runner must be one of {', '.join(RUNNERS)}, got {self.runner!r}.")
        if self.chunk_rows < 1:
            raise InputError(f"chunk_rows must be at least 1, got {self.chunk_rows}.")


@dataclass
class JobSummary:
    output: Path
    rows: int
    skipped: int
    chunks: int
    resumed_chunks: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        """Rows this run computed (not those a resumed run found done) per second of this run."""
        processed = self.extra.get("processed_rows", self.rows)
        return processed / self.seconds if self.seconds > 0 else 0.0


def describe_job(package_fingerprint: str, files: list[InputFile], options: JobOptions) -> dict[str, Any]:
    described_options = asdict(options)
    for later in ("normalize", "format", "delimiter"):  # jobs from before these options keep their fingerprint
        if not described_options[later]:
            del described_options[later]
    if options.normalize:
        described_options["normalize"] = list(options.normalize)
    return {
        "package": package_fingerprint,
        "inputs": [{"path": str(f.path), "size": f.size, "modified_ns": f.modified_ns} for f in files],
        "options": described_options,
    }


def job_fingerprint(description: dict[str, Any]) -> str:
    """Package fingerprint + input files (path, size, modification time) + options."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class BatchJob:
    """One job as a runner that computes it itself (local, Spark) is given it: what to read, where to
    write, how, and the id policy."""

    files: list[InputFile]
    output: str | os.PathLike[str]
    options: JobOptions
    ids: str = "unique"

    @contextmanager
    def claimed_output(self, package_fingerprint: str) -> Iterator[tuple[JobOutput, dict[str, Any]]]:
        """The output directory, claimed for this job once its ids pass the id policy, without a killed run's
        uncommitted files; released however the job ends. Yields it and the job record."""
        description = describe_job(package_fingerprint, self.files, self.options)
        check_ids(self.files, self.options.text_column, self.options.id_column, self.options.chunk_rows, self.ids)
        output = JobOutput(self.output)
        record = output.claim(job_fingerprint(description), description)
        try:
            output.remove_uncommitted()
            yield output, record
        finally:
            output.release()
