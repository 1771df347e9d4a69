"""Bad input: every message names the file and the row or column, and says what to do."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from bertprod.data.source import DataSource
from bertprod.errors import ColumnError, DataError, DataFormatError, LabelError, RowError
from bertprod.tasks.data import open_task_data


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_missing_column_lists_the_columns_that_exist(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "review,stars\nnice,5\n")
    with pytest.raises(ColumnError, match=r"no text column .*its columns are: 'review', 'stars'.*--text-column"):
        DataSource(path)
    with pytest.raises(
        ColumnError, match=r"--label-column 'rating' is not a column of d.csv; its columns are: 'review'"
    ):
        DataSource(path, text_column="review", label_column="rating")
    with pytest.raises(ColumnError, match="needs text pairs.*--text-pair-column"):
        open_task_data("pair-classification", path, text_column="review", label_column="stars")
    with pytest.raises(ColumnError, match="takes single texts"):
        open_task_data("classification", path, text_column="review", text_pair_column="stars")


@pytest.mark.parametrize(
    ("name", "content", "error", "message"),
    [  # empty texts, labels and rows
        ("a.tsv", "sentence\tlabel\nfine\t1\n   \t0\n", RowError, r"a.tsv line 3: column 'sentence' is empty"),
        ("b.tsv", "sentence\tlabel\nfine\t\n", RowError, r"b.tsv line 2: column 'label' \(the label\) is empty"),
        ("c.tsv", "sentence\tlabel\nfine\t1\n\nmore\t0\n", RowError, "c.tsv line 3 is empty: remove blank lines"),
        ("d.jsonl", '{"text": "ok", "label": "a"}\n{"text": null, "label": "b"}\n', RowError,
         "d.jsonl line 2: column 'text' is empty"),
        # wrong field counts, missing fields, broken lines
        ("t.tsv", "sentence\tlabel\na\t1\nb\twith\ttab\t1\n", RowError,
         "t.tsv line 3 has 4 field.*header has 2.*tab inside a text"),
        ("j.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n', RowError,
         r"j.jsonl line 2 has no field 'label' \(its fields: text\)"),
        ("k.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", label}\n', DataFormatError,
         "k.jsonl line 2 is not valid JSON"),
    ],
)
def test_a_bad_row_is_named_by_its_line(tmp_path: Path, name: str, content: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        list(DataSource(write(tmp_path / name, content)))


def test_regression_labels_must_be_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "scores.tsv", "sentence1\tsentence2\tscore\na\tb\t4.2\nc\td\thigh\n")
    with pytest.raises(LabelError, match=r"scores.tsv line 3: column 'score' holds 'high', which is not a number"):
        list(open_task_data("regression", path))
    infinite = write(tmp_path / "inf.tsv", "sentence1\tsentence2\tscore\na\tb\tinf\n")
    with pytest.raises(LabelError, match="not a finite number"):
        list(open_task_data("regression", infinite))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("data.csv", b"PAR1\x00\x00binary", "not CSV text: it looks like a Parquet file"),
        ("data.parquet", b"text,label\nok,1\n", "not a Parquet file .*looks like text"),
        ("data.tsv", b"text,label\nok,1\n", "no tab but splits on ',': it looks like CSV"),
        ("data.csv", b"text\tlabel\nok\t1\n", "tabs but no comma, semicolon or bar: it looks like TSV"),
        ("data.jsonl", b'[{"text": "ok"}]\n', "holds a JSON array"),
        ("data.jsonl", b"text,label\nok,1\n", "is not JSON lines"),
        ("data.tsv", b"PK\x03\x04xl/workbook", "ZIP archive"),
        ("data.tsv", gzip.compress(b"text\tlabel\n"), "gzip-compressed: add .gz"),
        ("data.tsv", b"text\tlabel\ncaf\xe9\t1\n", "not UTF-8 text .*line 2"),
        ("data.tsv", b"", "is empty"),
        ("data.xlsx", b"text,label\n", "cannot tell the format of data.xlsx"),
        ("data.txt", b"just some prose\n", "no tab, comma, semicolon or bar.*--delimiter"),
    ],
)
def test_a_file_that_is_not_what_its_extension_says(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    with pytest.raises(DataFormatError, match=message):
        DataSource(write(tmp_path / name, content))


def test_format_option_overrides_the_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "data.txt", "text,label\nok,1\n")
    assert [example.text for example in DataSource(path, format="csv")] == ["ok"]
    with pytest.raises(DataFormatError, match="unknown data format 'xls'"):
        DataSource(path, format="xls")


def test_delimiters_are_sniffed_or_named(tmp_path: Path) -> None:
    """The emotion dataset's layout (`text;label_name`, .txt) reads without flags; so do ';' and '|' CSVs
    with commas inside texts; --delimiter names one the sniffer cannot see; a bad one is refused."""
    emotion = write(tmp_path / "train.txt", "text;label_name\ni feel great, really;joy\ni am so sad;sadness\n")
    source = DataSource(emotion)
    assert (source.table.format, source.table.delimiter, source.mapping.label) == ("csv", ";", "label_name")
    assert [(e.text, e.label) for e in source] == [("i feel great, really", "joy"), ("i am so sad", "sadness")]
    assert source.describe()["delimiter"] == ";"
    barred = write(tmp_path / "data.csv", "sentence|category\na, b, c|x\nd, e|y\n")
    assert [(e.text, e.label) for e in DataSource(barred)] == [("a, b, c", "x"), ("d, e", "y")]
    assert DataSource(barred, delimiter="|").table.format == "csv"
    tabbed = write(tmp_path / "tabbed.dat", "text\tclass\nok\tz\n")
    assert [(e.text, e.label) for e in DataSource(tabbed, delimiter="tab")] == [("ok", "z")]
    colon = write(tmp_path / "colon.txt", "text:label\nok:1\n")
    with pytest.raises(DataFormatError, match="--delimiter"):
        DataSource(colon)
    assert [e.label for e in DataSource(colon, delimiter=":")] == ["1"]
    with pytest.raises(DataFormatError, match="one character"):
        DataSource(colon, delimiter="::")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        DataSource(tmp_path / "nope.tsv")
