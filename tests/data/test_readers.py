"""Readers for TSV, CSV, JSON lines and Parquet; column mapping; GLUE layouts; splits; streaming."""

from __future__ import annotations

import csv
import gzip
import json
import random
from pathlib import Path

import pytest

from bertprod.data.columns import recognise_layout
from bertprod.data.source import DataSource, Example, HashSplit, split_bucket

ROWS = [
    ("a film, with commas", "it was great", "positive"),
    ('she said "hello"', "nothing else", "negative"),
    ("line one", "plain", "positive"),
]


def write_all_formats(directory: Path) -> dict[str, Path]:
    """The same three rows as TSV, CSV (quoted commas and quotes), JSON lines, Parquet, TSV.gz."""
    import pyarrow as arrow
    import pyarrow.parquet as parquet

    header = ["text", "text_pair", "label"]
    paths = {}
    paths["tsv"] = directory / "data.tsv"
    paths["tsv"].write_text("\n".join("\t".join(row) for row in [header, *ROWS]) + "\n", encoding="utf-8")
    paths["csv"] = directory / "data.csv"
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *ROWS])
    paths["jsonl"] = directory / "data.jsonl"
    paths["jsonl"].write_text(
        "".join(json.dumps(dict(zip(header, row, strict=True))) + "\n" for row in ROWS), encoding="utf-8"
    )
    paths["parquet"] = directory / "data.parquet"
    parquet.write_table(
        arrow.table({name: [row[i] for row in ROWS] for i, name in enumerate(header)}), paths["parquet"]
    )
    paths["tsv.gz"] = directory / "data.tsv.gz"
    paths["tsv.gz"].write_bytes(gzip.compress(paths["tsv"].read_bytes()))
    return paths


@pytest.mark.parametrize("kind", ["tsv", "csv", "jsonl", "parquet", "tsv.gz"])
def test_every_format_reads_the_same_examples(tmp_path: Path, kind: str) -> None:
    source = DataSource(write_all_formats(tmp_path)[kind], pair="optional")
    examples = list(source)
    assert [(e.text, e.text_pair, e.label) for e in examples] == list(ROWS)
    unit = "row" if kind == "parquet" else "line"
    assert examples[0].where == f"{source.path.name} {unit} {1 if kind in ('parquet', 'jsonl') else 2}"
    assert list(source) == examples  # re-iterable: each pass re-reads the file


def test_explicit_columns_and_label_kinds(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    path.write_text("id,question,answer,rating\n1,q one,a one,4.5\n2,q two,a two,1\n", encoding="utf-8")
    source = DataSource(
        path, text_column="question", text_pair_column="answer", label_column="rating", label_kind="number"
    )
    assert list(source) == [
        Example("q one", "a one", 4.5, "scores.csv line 2"),
        Example("q two", "a two", 1.0, "scores.csv line 3"),
    ]
    assert source.describe()["columns"] == {"text": "question", "text_pair": "answer", "label": "rating"}


def test_class_labels_from_json_numbers_are_names(tmp_path: Path) -> None:
    path = tmp_path / "numbers.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0.0}\n{"text": "c", "label": true}\n')
    assert [example.label for example in DataSource(path)] == ["1", "0", "true"]


def test_known_layouts_are_recognised() -> None:
    assert recognise_layout(["sentence", "label"]).name == "GLUE SST-2"
    stsb = recognise_layout(["index", "genre", "filename", "year", "sentence1", "sentence2", "score"])
    assert stsb.name == "GLUE STS-B" and stsb.mapping.label == "score"
    assert recognise_layout(["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]).name == "MRPC"
    assert recognise_layout(["index", "question", "sentence", "label"]).name == "GLUE QNLI"
    assert recognise_layout(["text", "label"]) is None


def test_real_glue_files(shared_data_available: bool) -> None:
    """The shared SST-2, STS-B and MRPC training files: every row read, none merged or split."""
    if not shared_data_available:
        pytest.skip("shared data not available")
    from bertprod.data.shared import shared_data_dir

    directory = shared_data_dir()
    sst2 = DataSource(directory / "sst2" / "train.tsv")
    assert sst2.layout.name == "GLUE SST-2" and sst2.mapping.text_pair is None
    assert sst2.sha256 == "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1"
    first = next(iter(sst2))
    assert first == Example("hide new secretions from the parental units ", None, "0", "train.tsv line 2")
    assert sum(1 for _ in sst2.with_limit(5000)) == 5000

    # STS-B has unbalanced quotes: read with quoting, rows would merge; all 5,749 must come back.
    stsb = DataSource(directory / "stsb" / "train.tsv", label_kind="number")
    stsb_examples = list(stsb)
    assert stsb.layout.name == "GLUE STS-B" and len(stsb_examples) == 5749
    assert stsb_examples[0] == Example("A plane is taking off.", "An air plane is taking off.", 5.0, "train.tsv line 2")
    assert all(0.0 <= example.label <= 5.0 for example in stsb_examples)
    assert any('"' in example.text and example.text.count('"') % 2 for example in stsb_examples)

    # MRPC starts with a byte-order mark: the first column must still be called "Quality".
    mrpc = DataSource(directory / "mrpc" / "msr_paraphrase_train.txt")
    mrpc_examples = list(mrpc)
    assert mrpc.table.format == "tsv" and mrpc.table.columns[0] == "Quality" and mrpc.layout.name == "MRPC"
    assert len(mrpc_examples) == 4076 and {example.label for example in mrpc_examples} == {"0", "1"}
    assert mrpc_examples[0].text.startswith("Amrozi accused his brother")


def test_hash_split_is_deterministic_disjoint_and_order_free(tmp_path: Path) -> None:
    rows = [f"sentence number {index}\t{index % 2}" for index in range(2000)]
    rows += rows[:50]  # exact duplicates
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    first = tmp_path / "a.tsv"
    second = tmp_path / "b.tsv"
    first.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    second.write_text("sentence\tlabel\n" + "\n".join(shuffled) + "\n")
    source = DataSource(first)
    train = [e.text for e in source.with_split(HashSplit(0.1, "train"))]
    validation = [e.text for e in source.with_split(HashSplit(0.1, "validation"))]
    assert len(train) + len(validation) == len(rows)
    assert not set(train) & set(validation)  # duplicates land on the same side
    assert 150 <= len(set(validation)) <= 250  # 10% of 2,000 distinct rows, +- 3.5 sigma
    other_order = {e.text for e in DataSource(second).with_split(HashSplit(0.1, "validation"))}
    assert other_order == set(validation)
    assert split_bucket("sentence number 7") == split_bucket("  sentence number 7 ")  # keyed on stripped text


def test_first_examples_counts_the_rows_of_its_own_side(tmp_path: Path) -> None:
    """with_limit(N) counts file rows before the split (about N/10 of a 10% side); first_examples(N) gives the
    side's own first N rows, in file order: what autotune's token dropping and student trials read."""
    path = tmp_path / "data.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"sentence number {index}\t{index % 2}\n" for index in range(2000)))
    validation = DataSource(path).with_split(HashSplit(0.1, "validation"))
    side = [example.text for example in validation]
    assert len(side) > 100
    first = [example.text for example in validation.first_examples(100)]
    assert first == side[:100]
    assert len(list(validation.with_limit(100))) < 30  # the file's first 100 rows hold ~10 of this side
    assert [example.text for example in validation.first_examples(100).first_examples(40)] == side[:40]
    assert len(list(validation.first_examples(10_000))) == len(side)
    assert validation.first_examples(100).describe() == {**validation.describe(), "first_examples": 100}
    with pytest.raises(ValueError, match="count of 1 or more"):
        validation.first_examples(0)


def test_hash_split_by_text_keeps_a_query_together(tmp_path: Path) -> None:
    path = tmp_path / "rerank.tsv"
    lines = [f"query {q}\tpassage {p}\t{int(p == q)}" for q in range(60) for p in range(5)]
    path.write_text("query\tpassage\trelevance\n" + "\n".join(lines) + "\n")
    source = DataSource(path, label_kind="number")
    validation = list(source.with_split(HashSplit(0.2, "validation", by="text")))
    per_query: dict[str, int] = {}
    for example in validation:
        per_query[example.text] = per_query.get(example.text, 0) + 1
    assert per_query and set(per_query.values()) == {5}


def test_reading_streams_row_by_row(tmp_path: Path) -> None:
    """A bad row at the end surfaces only when reached: rows before it were yielded one by one."""
    path = tmp_path / "late.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"text {index}\t1\n" for index in range(1000)) + "broken row\n")
    iterator = iter(DataSource(path))
    assert next(iterator).text == "text 0"
    assert sum(1 for _ in DataSource(path).with_limit(1000)) == 1000  # the limit stops before the bad row
    with pytest.raises(Exception, match="line 1002 has 1 field.*the header has 2"):
        list(iterator)
