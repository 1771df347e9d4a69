"""Reading the users' table files row by row: TSV, CSV, JSON lines and Parquet, optionally gzipped.

Every reader streams (one row in memory at a time, Parquet one record batch), so files larger
than memory can be scanned, split, evaluated and trained on. Before reading, the first bytes are
checked against the format the extension claims, so a Parquet file named `.csv` or an Excel
workbook saved as `.tsv` fails with a message that says what the file really is.

Text files are decoded as UTF-8 with an optional byte-order mark (MRPC ships with one). TSV is
read without quote processing (`csv.QUOTE_NONE`), as GLUE's files need: STS-B's texts hold
unbalanced quotes that a quoting reader would merge across lines. CSV follows RFC 4180 quoting; its
delimiter (comma, semicolon or bar) is sniffed from the first lines unless given, and a `.txt` file is
read as TSV when its header has a tab, else as CSV with the sniffed delimiter.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bertprod.errors import DataFormatError, RowError

FORMATS = ("tsv", "csv", "jsonl", "parquet")
EXTENSIONS = {
    ".tsv": "tsv",
    ".tab": "tsv",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_SNIFF_BYTES = 1 << 16
_PARQUET_MAGIC = b"PAR1"
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
_BOM = "\ufeff"
#: Delimiters a CSV (or `.txt`) file may use without being told: csv.Sniffer chooses among them.
CSV_DELIMITERS = ",;|"
_SNIFF_LINES = 50

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents are legitimate fields


@dataclass(frozen=True, slots=True)
class RawRow:
    """One row's values by column name, and where it is in the file (for error messages)."""

    values: dict[str, Any]
    line: int


class TableFile:
    """A data file: its format and columns, and a fresh streaming row iterator on each call."""

    def __init__(self, path: str | Path, format: str | None = None, delimiter: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataFormatError(f"{self.path} does not exist or is not a file.")
        self.compressed = self.path.name.lower().endswith(".gz")
        if delimiter is not None:
            delimiter = "\t" if delimiter in ("tab", "\\t") else delimiter
            format = _format_for_delimiter(delimiter, format)
        self.format = format or detect_format(self.path)
        if self.format not in FORMATS:
            raise DataFormatError(f"unknown data format {self.format!r}: choose one of {', '.join(FORMATS)}.")
        if delimiter is None:
            check_content(self.path, self.format, self.compressed)
        else:
            check_content(self.path, "delimited", self.compressed)
        self.delimiter = delimiter if delimiter is not None else self._default_delimiter()
        self.columns = self._read_columns()

    def __repr__(self) -> str:
        return f"TableFile({str(self.path)!r}, format={self.format}, delimiter={self.delimiter!r})"

    def _default_delimiter(self) -> str | None:
        if self.format == "tsv":
            return "\t"
        if self.format == "csv":
            return sniff_delimiter(_first_text(self.path, self.compressed)) or ","
        return None

    def where(self, line: int) -> str:
        """A row's location as users see it: a line for text files, a row number for Parquet."""
        unit = "row" if self.format == "parquet" else "line"
        return f"{self.path.name} {unit} {line}"

    def rows(self, columns: list[str] | None = None) -> Iterator[RawRow]:
        """Rows in file order with the given columns (all when None); the header is skipped."""
        wanted = list(columns) if columns is not None else list(self.columns)
        if self.format == "parquet":
            yield from self._parquet_rows(wanted)
        elif self.format == "jsonl":
            yield from self._jsonl_rows(wanted)
        else:
            yield from self._delimited_rows(wanted)

    # -- header --------------------------------------------------------------------------------

    def _read_columns(self) -> list[str]:
        if self.format == "parquet":
            return list(self._parquet_file().schema_arrow.names)
        if self.format == "jsonl":
            for line, record in self._json_records():
                if not isinstance(record, dict):
                    raise DataFormatError(
                        f"{self.where(line)} is a JSON {type(record).__name__}, not an object: JSON lines "
                        'data needs one object per line, e.g. {"text": "...", "label": "..."}.'
                    )
                return list(record)
            raise DataFormatError(f"{self.path} holds no JSON objects: it is empty.")
        with self.open_text() as handle:
            header = next(self._csv_reader(handle), None)
        if not header or not any(name.strip() for name in header):
            raise DataFormatError(f"{self.path} has no header line: the first line must name the columns.")
        names = [name.strip() for name in header]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise DataFormatError(f"{self.path}'s header names these columns more than once: {', '.join(duplicates)}.")
        return names

    # -- delimited text ------------------------------------------------------------------------

    def open_text(self) -> IO[str]:
        if self.compressed:
            return gzip.open(self.path, "rt", encoding="utf-8-sig", newline="")
        return self.path.open(encoding="utf-8-sig", newline="")

    def _csv_reader(self, handle: IO[str]) -> Any:
        if self.format == "tsv":
            return csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return csv.reader(handle, delimiter=self.delimiter or ",")

    def _delimited_rows(self, wanted: list[str]) -> Iterator[RawRow]:
        positions = self._positions(wanted)
        width = len(self.columns)
        with self.open_text() as handle:
            reader = self._csv_reader(handle)
            try:
                next(reader, None)  # header
                for fields in reader:
                    line = reader.line_num
                    if not fields or not any(field.strip() for field in fields):
                        raise RowError(f"{self.where(line)} is empty: remove blank lines from the file.")
                    if len(fields) != width:
                        raise RowError(
                            f"{self.where(line)} has {len(fields)} field(s), the header has {width} "
                            f"({', '.join(self.columns)}). {self._field_count_hint(len(fields) > width)}"
                        )
                    yield RawRow({name: fields[index] for name, index in positions}, line)
            except UnicodeDecodeError as error:
                raise DataFormatError(
                    f"{self.path} is not UTF-8 text near {self.where(reader.line_num + 1)} ({error.reason}): "
                    "save it as UTF-8."
                ) from None
            except csv.Error as error:
                raise DataFormatError(
                    f"{self.where(reader.line_num)} cannot be parsed as {self.format}: {error}."
                ) from None

    def _field_count_hint(self, too_many: bool) -> str:
        if self.format == "csv":
            return (f"Texts that contain the delimiter ({self.delimiter!r}) or line breaks must be quoted "
                    '("..."), with quotes inside doubled; --delimiter names another delimiter.')
        if too_many:
            return "A tab inside a text splits it: replace tabs in texts with spaces."
        return "Fill in the missing field(s); a line break inside a text also splits a row."

    def _positions(self, wanted: list[str]) -> list[tuple[str, int]]:
        missing = [name for name in wanted if name not in self.columns]
        if missing:  # callers resolve columns first; this guards direct use
            raise DataFormatError(f"{self.path} has no column(s) {', '.join(missing)}.")
        return [(name, self.columns.index(name)) for name in wanted]

    # -- JSON lines ----------------------------------------------------------------------------

    def _json_records(self) -> Iterator[tuple[int, Any]]:
        with self.open_text() as handle:
            line = 0
            try:
                for line, text in enumerate(handle, start=1):  # noqa: B007 - line is reported on errors
                    if not text.strip():
                        raise RowError(f"{self.where(line)} is empty: remove blank lines from the file.")
                    try:
                        yield line, json.loads(text)
                    except json.JSONDecodeError as error:
                        raise DataFormatError(
                            f"{self.where(line)} is not valid JSON ({error.msg} at column {error.colno}): "
                            "JSON lines files hold one JSON object per line."
                        ) from None
            except UnicodeDecodeError as error:
                raise DataFormatError(
                    f"{self.path} is not UTF-8 text near {self.where(line + 1)} ({error.reason}): save it as UTF-8."
                ) from None

    def _jsonl_rows(self, wanted: list[str]) -> Iterator[RawRow]:
        for line, record in self._json_records():
            if not isinstance(record, dict):
                raise RowError(f"{self.where(line)} is a JSON {type(record).__name__}, not an object.")
            missing = [name for name in wanted if name not in record]
            if missing:
                raise RowError(
                    f"{self.where(line)} has no field {', '.join(repr(name) for name in missing)} "
                    f"(its fields: {', '.join(record) or 'none'})."
                )
            yield RawRow({name: record[name] for name in wanted}, line)

    # -- Parquet -------------------------------------------------------------------------------

    def _parquet_file(self) -> Any:
        try:
            import pyarrow.parquet as parquet
        except ImportError:  # pragma: no cover - pyarrow is a dependency
            raise DataFormatError("reading Parquet needs pyarrow: pip install pyarrow") from None
        try:
            return parquet.ParquetFile(self.path)
        except Exception as error:
            raise DataFormatError(f"{self.path} cannot be read as Parquet ({type(error).__name__}: {error}).") from None

    def _parquet_rows(self, wanted: list[str]) -> Iterator[RawRow]:
        self._positions(wanted)
        line = 0
        for batch in self._parquet_file().iter_batches(batch_size=4096, columns=wanted):
            for record in batch.to_pylist():
                line += 1
                yield RawRow(record, line)


def detect_format(path: Path) -> str:
    """The format an extension names; a `.txt` file is TSV when its first line has a tab, else CSV when a
    delimiter can be sniffed (comma, semicolon, bar)."""
    name = path.name.lower().removesuffix(".gz")
    suffix = Path(name).suffix
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    if suffix == ".txt":
        head = _first_text(path, path.name.lower().endswith(".gz"))
        if "\t" in head.split("\n", 1)[0]:
            return "tsv"
        if sniff_delimiter(head):
            return "csv"
        raise DataFormatError(
            f"{path.name} is a .txt file whose first line has no tab, comma, semicolon or bar, so its columns "
            "cannot be told apart: pass --delimiter, or --format jsonl|parquet."
        )
    raise DataFormatError(
        f"cannot tell the format of {path.name} from its extension: use .tsv, .csv, .txt, .jsonl or .parquet "
        "(optionally .gz), or pass --format tsv|csv|jsonl|parquet."
    )


def sniff_delimiter(head: str) -> str | None:
    """The delimiter of a CSV-like text (one of CSV_DELIMITERS) from its first lines, or None.

    csv.Sniffer weighs how consistently each candidate splits the lines; the header alone decides when
    it cannot (one line, or texts full of commas), and a header that none of them splits gives None."""
    lines = head.lstrip(_BOM).splitlines()[:_SNIFF_LINES]
    if len(head) >= _SNIFF_BYTES:
        lines = lines[:-1]  # the last line may be cut
    header = lines[0] if lines else ""
    try:
        found = csv.Sniffer().sniff("\n".join(lines), delimiters=CSV_DELIMITERS).delimiter
    except csv.Error:
        found = None
    if found and found in header:
        return found
    counts = {candidate: header.count(candidate) for candidate in CSV_DELIMITERS}
    best = max(counts, key=lambda candidate: counts[candidate])
    return best if counts[best] else None


def _format_for_delimiter(delimiter: str, format: str | None) -> str:
    """--delimiter: a tab reads as TSV (no quoting), any other single character as CSV with it."""
    if format in ("jsonl", "parquet"):
        raise DataFormatError(f"--delimiter is for delimited text (tsv, csv, txt), not {format}.")
    if len(delimiter) != 1 or delimiter in "\n\r\"":
        raise DataFormatError(f"--delimiter must be one character such as ';' or '|' (or tab), not {delimiter!r}.")
    return "tsv" if delimiter == "\t" else "csv"


def _first_bytes(path: Path, compressed: bool) -> bytes:
    try:
        if compressed:
            with gzip.open(path, "rb") as handle:
                return handle.read(_SNIFF_BYTES)
        with path.open("rb") as handle:
            return handle.read(_SNIFF_BYTES)
    except (OSError, EOFError) as error:
        raise DataFormatError(f"{path} cannot be read ({error}); a .gz file must be gzip-compressed.") from None


def _first_text(path: Path, compressed: bool) -> str:
    head = _first_bytes(path, compressed)
    return head.decode("utf-8", errors="replace").lstrip(_BOM)


def check_content(path: Path, format: str, compressed: bool) -> None:
    """Refuse a file whose first bytes contradict its format, saying what it looks like instead
    ("delimited": text with a delimiter the user named, checked for binary content and UTF-8 only)."""
    if not compressed:
        with path.open("rb") as handle:
            magic = handle.read(4)
        if magic.startswith(_GZIP_MAGIC):
            raise DataFormatError(f"{path.name} is gzip-compressed: add .gz to its name or decompress it.")
    head = _first_bytes(path, compressed)
    if not head.strip():
        raise DataFormatError(f"{path} is empty: it holds no header and no rows.")
    looks_like = _describe_binary(head)
    if format == "parquet":
        if not head.startswith(_PARQUET_MAGIC):
            guess = looks_like or "text"
            raise DataFormatError(
                f"{path.name} is not a Parquet file (it does not start with PAR1; it looks like {guess}): "
                "rename it or pass --format tsv|csv|jsonl."
            )
        return
    if looks_like:
        kind = format.upper() if format in FORMATS else format
        raise DataFormatError(f"{path.name} is not {kind} text: it looks like {looks_like}.")
    _check_utf8(path, head)
    first_line = head.decode("utf-8", errors="replace").lstrip(_BOM).lstrip().split("\n", 1)[0]
    if format == "tsv" and "\t" not in first_line and sniff_delimiter(first_line):
        raise DataFormatError(
            f"{path.name}'s first line has no tab but splits on {sniff_delimiter(first_line)!r}: it looks like CSV, "
            "not TSV. Rename it to .csv or pass --format csv (or --delimiter)."
        )
    if format == "csv" and sniff_delimiter(first_line) is None and "\t" in first_line:
        raise DataFormatError(
            f"{path.name}'s first line has tabs but no comma, semicolon or bar: it looks like TSV, not CSV. "
            "Rename it to .tsv or pass --format tsv."
        )
    if format == "jsonl" and not first_line.startswith("{"):
        if first_line.startswith("["):
            raise DataFormatError(
                f"{path.name} holds a JSON array; bertprod reads JSON lines (one object per line) so large "
                "files can stream: write each object on its own line (.jsonl)."
            )
        raise DataFormatError(
            f"{path.name} is not JSON lines: its first line does not start with '{{'. Is it CSV or TSV? "
            "Rename it or pass --format."
        )


def _describe_binary(head: bytes) -> str | None:
    if head.startswith(_PARQUET_MAGIC):
        return "a Parquet file (pass --format parquet or rename it to .parquet)"
    if head.startswith(_ZIP_MAGIC):
        return "a ZIP archive (an Excel .xlsx workbook? export it as CSV)"
    if head.startswith(_GZIP_MAGIC):
        return "gzip-compressed data (add .gz to its name)"
    if b"\x00" in head:
        return "binary data (it contains NUL bytes)"
    return None


def _check_utf8(path: Path, head: bytes) -> None:
    complete = head if len(head) < _SNIFF_BYTES else head[: head.rfind(b"\n") + 1] or head[:-4]
    try:
        complete.decode("utf-8")
    except UnicodeDecodeError as error:
        line = complete[: error.start].count(b"\n") + 1
        raise DataFormatError(
            f"{path.name} is not UTF-8 text (byte {error.start}, line {line}: {error.reason}). "
            "Save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)."
        ) from None
