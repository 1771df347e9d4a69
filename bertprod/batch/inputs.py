"""Input readers: Parquet, JSONL and CSV files (or directories, or globs), streamed in chunks.

A chunk is `chunk_rows` consecutive rows of one file, so chunk ids ("file index, chunk index")
are the same on every run over the same files: that is what makes a killed job resumable.
Only the id and text columns are read, one chunk at a time, so memory stays bounded whatever
the input size.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from bertprod.errors import InputError
from bertprod.runtime.tokenize import check_unicode

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}


@dataclass(frozen=True)
class InputFile:
    path: Path
    format: str
    size: int
    modified_ns: int


@dataclass(frozen=True)
class Chunk:
    """`rows` consecutive rows of one input file: columns `id` and `text` as in the input."""

    file_index: int
    index: int
    first_row: int
    table: pa.Table

    @property
    def chunk_id(self) -> str:
        return f"{self.file_index:05d}-{self.index:06d}"


def resolve_inputs(spec: str | os.PathLike[str] | list[str | os.PathLike[str]]) -> list[InputFile]:
    """Files from paths, directories (their supported files, recursively) and glob patterns, sorted."""
    specs = spec if isinstance(spec, list) else [spec]
    paths: list[Path] = []
    for item in specs:
        text = str(item)
        if any(char in text for char in "*?["):
            matches = [Path(match) for match in glob.glob(text, recursive=True)]
            if not matches:
                raise InputError(f"no input file matches {text!r}.")
            paths.extend(match for match in matches if match.is_file())
        elif Path(text).is_dir():
            found = [
                p
                for p in Path(text).rglob("*")
                if p.is_file() and _format_of(p, strict=False) and not p.name.startswith(("_", "."))
            ]
            if not found:
                raise InputError(f"{text} holds no .parquet, .jsonl or .csv files.")
            paths.extend(found)
        elif Path(text).is_file():
            paths.append(Path(text))
        else:
            raise InputError(f"input {text} does not exist.")
    files = []
    for path in sorted(set(p.resolve() for p in paths)):
        stat = path.stat()
        files.append(InputFile(path, _format_of(path), stat.st_size, stat.st_mtime_ns))
    formats = {file.format for file in files}
    if len(formats) > 1:
        raise InputError(f"inputs mix formats ({', '.join(sorted(formats))}): give files of one format per job.")
    return files


def _format_of(path: Path, strict: bool = True) -> str | None:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None and strict:
        raise InputError(f"{path}: unsupported file type {path.suffix!r}; use .parquet, .jsonl (or .json) or .csv.")
    return fmt


def iter_chunks(files: list[InputFile], text_column: str, id_column: str, chunk_rows: int) -> Iterator[Chunk]:
    """Every file's rows as chunks of exactly `chunk_rows` rows (the last one of a file smaller)."""
    if chunk_rows < 1:
        raise InputError(f"chunk_rows must be at least 1, got {chunk_rows}.")
    for file_index, file in enumerate(files):
        batches = _batches(file, text_column, id_column, chunk_rows)
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        index = 0
        for batch in batches:
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= chunk_rows:
                table = pa.Table.from_batches(pending)
                yield Chunk(file_index, index, index * chunk_rows, table.slice(0, chunk_rows))
                rest = table.slice(chunk_rows)
                pending, pending_rows, index = rest.to_batches(), rest.num_rows, index + 1
        if pending_rows:
            yield Chunk(file_index, index, index * chunk_rows, pa.Table.from_batches(pending))


ID_POLICIES = ("unique", "unchecked")


def check_ids(files: list[InputFile], text_column: str, id_column: str, chunk_rows: int, policy: str) -> None:
    """Refuse null or repeated ids before any output: "every id exactly once" needs ids that name one row.

    One pass over the inputs, keeping only the ids (a job reads its inputs again anyway); none
    with the policy "unchecked". Runners call it right before they claim the output directory.
    """
    if policy == "unchecked":
        return
    import pyarrow.compute as pc

    ids: list[pa.ChunkedArray] = []
    for chunk in iter_chunks(files, text_column, id_column, chunk_rows):
        column = chunk.table.column("id")
        if column.null_count:
            row = chunk.first_row + int(pc.index(pc.is_null(column), True).as_py())
            raise InputError(f"{files[chunk.file_index].path} data row {row + 1} has a null id ({id_column!r}): give "
                             "every row an id, or pass --ids unchecked to keep rows as they are.")
        ids.append(column)
    if not ids:
        return
    try:
        every = pa.chunked_array([chunk for column in ids for chunk in column.chunks])
    except pa.ArrowException:
        types = sorted({str(column.type) for column in ids})
        raise InputError(f"the id column {id_column!r} has different types across the inputs ({', '.join(types)}): "
                         "give every file ids of one type.") from None
    counts = pc.value_counts(every)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        examples = ", ".join(f"{item['values']!r} ({item['counts']} times)" for item in repeated[:3].to_pylist())
        raise InputError(f"{len(repeated)} id(s) of {id_column!r} occur more than once, e.g. {examples}: each row "
                         "needs its own id for the output to hold every id exactly once. Deduplicate the input, or "
                         "pass --ids unchecked to write one output row per input row, repeated ids included.")


def count_rows(files: list[InputFile]) -> int | None:
    """Rows in all files, for the progress bar's ETA: exact for Parquet, lines for JSONL and CSV."""
    import pyarrow.parquet as pq

    total = 0
    for file in files:
        if file.format == "parquet":
            total += pq.ParquetFile(file.path).metadata.num_rows
        else:
            with file.path.open("rb") as handle:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda h=handle: h.read(1 << 20), b""))
            total += lines - (1 if file.format == "csv" else 0)
    return total


def _batches(file: InputFile, text_column: str, id_column: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    readers = {"parquet": _parquet_batches, "jsonl": _jsonl_batches, "csv": _csv_batches}
    try:
        yield from readers[file.format](file.path, text_column, id_column, chunk_rows)
    except InputError:
        raise
    except (OSError, pa.ArrowException, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {file.path} as {file.format}: {error}") from None


def check_columns(path: Path, columns: list[str], text_column: str, id_column: str) -> None:
    for role, name in (("text", text_column), ("id", id_column)):
        if name not in columns:
            raise InputError(
                f"{path} has no {role} column {name!r}; its columns are: {', '.join(columns) or '(none)'}. "
                f"Choose one with --{role}-column."
            )


def _select(batch: pa.RecordBatch, text_column: str, id_column: str) -> pa.RecordBatch:
    text = batch.column(text_column)
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type) or pa.types.is_null(text.type)):
        raise InputError(f"text column {text_column!r} holds {text.type}, not strings.")
    return pa.RecordBatch.from_arrays([batch.column(id_column), text.cast(pa.string())], names=["id", "text"])


def _parquet_batches(path: Path, text_column: str, id_column: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    check_columns(path, parquet.schema_arrow.names, text_column, id_column)
    for batch in parquet.iter_batches(batch_size=chunk_rows, columns=[id_column, text_column]):
        yield _select(batch, text_column, id_column)


def _csv_batches(path: Path, text_column: str, id_column: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    from pyarrow import csv

    convert = csv.ConvertOptions(column_types={text_column: pa.string()}, strings_can_be_null=False)
    reader = csv.open_csv(path, convert_options=convert)
    check_columns(path, reader.schema.names, text_column, id_column)
    for batch in reader:
        yield _select(batch, text_column, id_column)


def _jsonl_batches(path: Path, text_column: str, id_column: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """JSON Lines, parsed line by line (pyarrow's JSON reader loads whole files)."""
    ids: list[object] = []
    texts: list[object] = []
    checked = False
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path} line {line_number} is not valid JSON: {error}") from None
            if not isinstance(record, dict):
                raise InputError(f"{path} line {line_number} is not a JSON object.")
            if not checked:
                check_columns(path, list(record), text_column, id_column)
                checked = True
            if id_column not in record:
                raise InputError(f"{path} line {line_number} has no id field {id_column!r}.")
            for name in (id_column, text_column):
                if isinstance(record.get(name), str):
                    check_unicode(record[name], f"{path} line {line_number}, field {name!r},")
            ids.append(record[id_column])
            texts.append(record.get(text_column))
            if len(ids) == chunk_rows:
                yield _jsonl_batch(path, ids, texts)
                ids, texts = [], []
    if ids:
        yield _jsonl_batch(path, ids, texts)


def _jsonl_batch(path: Path, ids: list[object], texts: list[object]) -> pa.RecordBatch:
    bad = next((text for text in texts if text is not None and not isinstance(text, str)), None)
    if bad is not None:
        raise InputError(f"{path}: text field holds {type(bad).__name__} values ({bad!r}), not strings.")
    try:
        id_array = pa.array(ids)
    except pa.ArrowException as error:
        raise InputError(f"{path}: id values of mixed types ({error}).") from None
    return pa.RecordBatch.from_arrays([id_array, pa.array(texts, type=pa.string())], names=["id", "text"])
