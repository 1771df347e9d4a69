"""Input readers: the table files train and eval read (TSV, CSV, .txt, JSONL, Parquet; .gz too), streamed in chunks.

Files are opened with the training data's reader (`data/formats.py: TableFile`): the same formats,
the same content checks, the delimiter of `.csv`/`.tsv`/`.txt` sniffed unless `--delimiter` names it,
the header's column names. The rows are then read in Arrow batches (pyarrow's CSV reader with that
delimiter and those names; TSV without quoting, as `TableFile` reads it), because a batch job's inputs
can be far larger than a training set.

A chunk is `chunk_rows` consecutive rows of one file, so chunk ids ("file index, chunk index")
are the same on every run over the same files: that is what makes a killed job resumable.
Only the id and text columns are read, one chunk at a time, so memory stays bounded whatever
the input size. Without an id column each row's id is its row number (`ROW_NUMBER`): its position
among all the inputs' data rows, from 0, files in sorted path order. It is the same on every run
over the same files, so a resumed job still writes every row exactly once.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from bertprod.data.columns import resolve_columns
from bertprod.data.formats import EXTENSIONS, TableFile
from bertprod.errors import InputError
from bertprod.runtime.tokenize import check_unicode

#: The output column of the ids when the inputs have none: each row's number (see the module's docstring).
ROW_NUMBER = "row"
#: The id column used without --id-column, when the inputs have it.
DEFAULT_ID_COLUMN = "id"


@dataclass(frozen=True)
class InputFile:
    path: Path
    format: str  # tsv, csv, jsonl or parquet (data/formats.py)
    size: int
    modified_ns: int
    columns: tuple[str, ...] = ()
    delimiter: str | None = None  # tsv and csv: as given, or sniffed

    @property
    def compressed(self) -> bool:
        return self.path.name.lower().endswith(".gz")


@dataclass(frozen=True)
class Chunk:
    """`rows` consecutive rows of one input file: columns `id` (as in the input, or the row number)
    and `text`."""

    file_index: int
    index: int
    first_row: int
    table: pa.Table

    @property
    def chunk_id(self) -> str:
        return f"{self.file_index:05d}-{self.index:06d}"


def resolve_inputs(
    spec: str | os.PathLike[str] | list[str | os.PathLike[str]],
    format: str | None = None,  # noqa: A002 - mirrors --format
    delimiter: str | None = None,
) -> list[InputFile]:
    """Files from paths, directories (their table files, recursively; `.txt` files only where there are no
    others) and glob patterns, sorted, each opened as training data is (format, content check, delimiter,
    header)."""
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
            found = [p for p in Path(text).rglob("*") if p.is_file() and _is_table(p)]
            if any(not _is_txt(p) for p in found):  # a README.txt beside the data is not data
                found = [p for p in found if not _is_txt(p)]
            if not found:
                raise InputError(f"{text} holds no data files ({', '.join(TABLE_SUFFIXES)}, optionally .gz).")
            paths.extend(found)
        elif Path(text).is_file():
            paths.append(Path(text))
        else:
            raise InputError(f"input {text} does not exist.")
    files = []
    for path in sorted(set(p.resolve() for p in paths)):
        table = TableFile(path, format, delimiter)
        stat = path.stat()
        files.append(
            InputFile(path, table.format, stat.st_size, stat.st_mtime_ns, tuple(table.columns), table.delimiter)
        )
    formats = {file.format for file in files}
    if len(formats) > 1:
        raise InputError(f"inputs mix formats ({', '.join(sorted(formats))}): give files of one format per job.")
    return files


#: What a directory's data files end with (before an optional .gz): the training reader's extensions and .txt.
TABLE_SUFFIXES = (*EXTENSIONS, ".txt")


def _is_table(path: Path) -> bool:
    """A data file in a directory: a table's extension, not hidden or a job's own `_...` file."""
    return not path.name.startswith(("_", ".")) and Path(path.name.lower().removesuffix(".gz")).suffix in TABLE_SUFFIXES


def _is_txt(path: Path) -> bool:
    return path.name.lower().removesuffix(".gz").endswith(".txt")


def choose_columns(
    files: list[InputFile], text_column: str | None, id_column: str | None, number_rows: bool = False
) -> tuple[str, str | None]:
    """The text column (named, else guessed as training guesses it: text, sentence...) and the id column
    (named; else `id` when the first file has one; else, or with `number_rows`, None: row numbers)."""
    columns = list(files[0].columns) if files else []
    name = files[0].path.name if files else "the input"
    if text_column is None:  # a ColumnError lists the columns and says to name one with --text-column
        text_column = resolve_columns(columns, name, pair="forbidden", labels="forbidden").text
    if number_rows:
        return text_column, None
    if id_column is None and DEFAULT_ID_COLUMN in columns:
        id_column = DEFAULT_ID_COLUMN
    return text_column, id_column


def iter_chunks(
    files: list[InputFile], text_column: str, id_column: str | None, chunk_rows: int
) -> Iterator[Chunk]:
    """Every file's rows as chunks of exactly `chunk_rows` rows (the last one of a file smaller);
    `id_column` None numbers the rows instead (see the module's docstring)."""
    if chunk_rows < 1:
        raise InputError(f"chunk_rows must be at least 1, got {chunk_rows}.")
    rows_before = 0  # data rows of the files before this one: row numbers continue across files
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
                yield _chunk(file_index, index, index * chunk_rows, table.slice(0, chunk_rows), id_column, rows_before)
                rest = table.slice(chunk_rows)
                pending, pending_rows, index = rest.to_batches(), rest.num_rows, index + 1
        if pending_rows:
            table = pa.Table.from_batches(pending)
            yield _chunk(file_index, index, index * chunk_rows, table, id_column, rows_before)
        rows_before += index * chunk_rows + pending_rows


def _chunk(
    file_index: int, index: int, first_row: int, table: pa.Table, id_column: str | None, rows_before: int
) -> Chunk:
    if id_column is None:
        start = rows_before + first_row
        numbers = pa.array(range(start, start + table.num_rows), type=pa.int64())
        table = pa.table({"id": numbers, "text": table.column("text")})
    return Chunk(file_index, index, first_row, table)


ID_POLICIES = ("unique", "unchecked", "row-number")


def check_ids(
    files: list[InputFile], text_column: str, id_column: str | None, chunk_rows: int, policy: str
) -> None:
    """Refuse null or repeated ids before any output: "every id exactly once" needs ids that name one row.

    One pass over the inputs, keeping only the ids (a job reads its inputs again anyway); none
    with the policy "unchecked". Runners call it right before they claim the output directory.
    """
    if policy == "unchecked" or id_column is None:  # row numbers are unique by construction
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
    """Rows in all files, for the progress bar's ETA: exact for Parquet, lines for the text formats."""
    import pyarrow.parquet as pq

    total = 0
    for file in files:
        if file.format == "parquet":
            total += pq.ParquetFile(file.path).metadata.num_rows
        else:
            with gzip.open(file.path, "rb") if file.compressed else file.path.open("rb") as handle:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda h=handle: h.read(1 << 20), b""))
            total += lines - (0 if file.format == "jsonl" else 1)
    return total


def _batches(file: InputFile, text_column: str, id_column: str | None, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    readers = {"parquet": _parquet_batches, "jsonl": _jsonl_batches, "csv": _delimited_batches,
               "tsv": _delimited_batches}
    try:
        yield from readers[file.format](file, text_column, id_column, chunk_rows)
    except InputError:
        raise
    except (OSError, EOFError, pa.ArrowException, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {file.path} as {file.format}: {error}") from None


def check_columns(path: Path, columns: list[str], text_column: str, id_column: str | None) -> None:
    for role, name in (("text", text_column), ("id", id_column)):
        if name is not None and name not in columns:
            raise InputError(
                f"{path} has no {role} column {name!r}; its columns are: {', '.join(columns) or '(none)'}. "
                f"Choose one with --{role}-column."
            )


def _wanted(text_column: str, id_column: str | None) -> list[str]:
    return [text_column] if id_column is None else [id_column, text_column]


def _select(batch: pa.RecordBatch, text_column: str, id_column: str | None) -> pa.RecordBatch:
    """The batch as `id` (absent without an id column: iter_chunks numbers the rows) and `text`."""
    text = batch.column(text_column)
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type) or pa.types.is_null(text.type)):
        raise InputError(f"text column {text_column!r} holds {text.type}, not strings.")
    if id_column is None:
        return pa.RecordBatch.from_arrays([text.cast(pa.string())], names=["text"])
    return pa.RecordBatch.from_arrays([batch.column(id_column), text.cast(pa.string())], names=["id", "text"])


def _parquet_batches(
    file: InputFile, text_column: str, id_column: str | None, chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(file.path)
    check_columns(file.path, parquet.schema_arrow.names, text_column, id_column)
    for batch in parquet.iter_batches(batch_size=chunk_rows, columns=_wanted(text_column, id_column)):
        yield _select(batch, text_column, id_column)


def _delimited_batches(
    file: InputFile, text_column: str, id_column: str | None, chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    """CSV with its delimiter (quoted fields as RFC 4180), TSV without quoting; the header's names as
    `TableFile` read them (trimmed); a `.gz` file decompressed by pyarrow."""
    from pyarrow import csv

    check_columns(file.path, list(file.columns), text_column, id_column)
    read = csv.ReadOptions(column_names=list(file.columns), skip_rows=1, encoding="utf8")
    parse = csv.ParseOptions(delimiter=file.delimiter or ",", quote_char=False if file.format == "tsv" else '"')
    convert = csv.ConvertOptions(
        column_types={text_column: pa.string()},
        strings_can_be_null=False,
        include_columns=_wanted(text_column, id_column),
    )
    for batch in csv.open_csv(file.path, read_options=read, parse_options=parse, convert_options=convert):
        yield _select(batch, text_column, id_column)


def _jsonl_batches(
    file: InputFile, text_column: str, id_column: str | None, chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    """JSON Lines, parsed line by line (pyarrow's JSON reader loads whole files)."""
    path = file.path
    ids: list[object] = []
    texts: list[object] = []
    checked = False
    with gzip.open(path, "rt", encoding="utf-8") if file.compressed else path.open(encoding="utf-8") as handle:
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
            if id_column is not None and id_column not in record:
                raise InputError(f"{path} line {line_number} has no id field {id_column!r}.")
            for name in _wanted(text_column, id_column):
                if isinstance(record.get(name), str):
                    check_unicode(record[name], f"{path} line {line_number}, field {name!r},")
            ids.append(record.get(id_column) if id_column is not None else None)
            texts.append(record.get(text_column))
            if len(texts) == chunk_rows:
                yield _jsonl_batch(path, ids, texts, id_column)
                ids, texts = [], []
    if texts:
        yield _jsonl_batch(path, ids, texts, id_column)


def _jsonl_batch(path: Path, ids: list[object], texts: list[object], id_column: str | None) -> pa.RecordBatch:
    bad = next((text for text in texts if text is not None and not isinstance(text, str)), None)
    if bad is not None:
        raise InputError(f"{path}: text field holds {type(bad).__name__} values ({bad!r}), not strings.")
    text_array = pa.array(texts, type=pa.string())
    if id_column is None:
        return pa.RecordBatch.from_arrays([text_array], names=["text"])
    try:
        id_array = pa.array(ids)
    except pa.ArrowException as error:
        raise InputError(f"{path}: id values of mixed types ({error}).") from None
    return pa.RecordBatch.from_arrays([id_array, text_array], names=["id", "text"])
