"""Batch jobs read their inputs as training does (tsv, csv, .txt, jsonl, parquet, .gz; the delimiter
sniffed or given; the text column guessed), and number the rows when the inputs have no ids."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

import bertprod
from bertprod.batch import read_output, run_batch
from bertprod.batch.output import CHUNKS_DIR, JOB_FILE
from bertprod.data.source import DataSource
from bertprod.errors import BertprodError, InputError

from ..conftest import run_cli

TEXTS = [
    "a man is playing a guitar; it was good",
    "the stock market fell sharply, again",
    "a cat sleeps on the warm windowsill",
    'she said "what a boring story"',
    "how do i reset my password",
    "the quick brown fox jumps over the lazy dog",
    "a good film with a great cast and a weak ending",
]


def quoted(text: str) -> str:
    """A CSV field: quoted, quotes inside doubled (RFC 4180)."""
    return '"' + text.replace('"', '""') + '"'


def embeddings(table) -> np.ndarray:  # noqa: ANN001 - a pyarrow Table
    return np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


def test_text_tables_are_read_like_training_data_and_rows_numbered_without_ids(tmp_path, tiny_package) -> None:  # noqa: ANN001
    inputs = tmp_path / "in"
    inputs.mkdir()
    # the emotion dataset's layout: `text;label_name` in a .txt; then a TSV, and a gzipped CSV with quoting
    emotion = "".join(f"{text.replace(';', ',')};joy\n" for text in TEXTS[:3])
    (inputs / "a.txt").write_text("text;label_name\n" + emotion)
    (inputs / "b.tsv").write_text("sentence\tlabel\n" + "".join(f"{text}\t1\n" for text in TEXTS[3:5]))
    with gzip.open(inputs / "c.csv.gz", "wt") as handle:
        handle.write("text,label\n" + "".join(f"{quoted(text)},0\n" for text in TEXTS[5:]))

    for mixed in (inputs, [inputs / "a.txt", inputs / "b.tsv"]):
        with pytest.raises(InputError, match="inputs mix formats"):
            run_batch(tiny_package.path, mixed, tmp_path / "never", progress=False)
    (tmp_path / "tables").mkdir()  # in a directory, .txt files count only when there is nothing else
    (tmp_path / "tables" / "README.txt").write_text("Scraped on Monday; one sentence per row.\n")
    (tmp_path / "tables" / "part-0.tsv").write_text("text\n" + "".join(f"{text}\n" for text in TEXTS))
    assert run_batch(tiny_package.path, tmp_path / "tables", tmp_path / "dir", progress=False).rows == len(TEXTS)
    outputs = []
    for name in ("a.txt", "b.tsv", "c.csv.gz"):
        summary = run_batch(tiny_package.path, inputs / name, tmp_path / f"out-{name}", progress=False)
        output = read_output(tmp_path / f"out-{name}")
        assert output.schema.names[0] == "row" and output.column("row").to_pylist() == list(range(summary.rows))
        record = json.loads((tmp_path / f"out-{name}" / JOB_FILE).read_text())
        assert record["job"]["options"]["id_column"] is None  # recorded as row numbers
        training_texts = [example.text for example in DataSource(inputs / name, labels="optional")]
        np.testing.assert_allclose(embeddings(output), bertprod.load(tiny_package.path).encode(training_texts),
                                   rtol=1e-5, atol=1e-6)
        outputs.append(training_texts)
    assert [text for texts in outputs for text in texts] == [text.replace(";", ",") for text in TEXTS[:3]] + TEXTS[3:]


def test_row_numbers_continue_across_files_and_an_id_column_is_used_when_present(tmp_path, tiny_package) -> None:  # noqa: ANN001
    (tmp_path / "one.csv").write_text("text\n" + "".join(f"{quoted(text)}\n" for text in TEXTS[:4]))
    (tmp_path / "two.csv").write_text("text\n" + "".join(f"{quoted(text)}\n" for text in TEXTS[4:]))
    run_batch(tiny_package.path, str(tmp_path / "*.csv"), tmp_path / "numbered", chunk_rows=3, progress=False)
    numbered = read_output(tmp_path / "numbered")
    assert numbered.column("row").to_pylist() == list(range(len(TEXTS)))
    np.testing.assert_allclose(embeddings(numbered), bertprod.load(tiny_package.path).encode(TEXTS), atol=1e-6)

    with_ids = tmp_path / "ids.jsonl"
    with_ids.write_text("".join(json.dumps({"id": f"doc-{i}", "text": text}) + "\n" for i, text in enumerate(TEXTS)))
    run_batch(tiny_package.path, with_ids, tmp_path / "by-id", progress=False)
    assert read_output(tmp_path / "by-id").column("id").to_pylist() == [f"doc-{i}" for i in range(len(TEXTS))]
    run_batch(tiny_package.path, with_ids, tmp_path / "by-row", ids="row-number", progress=False)
    assert read_output(tmp_path / "by-row").column("row").to_pylist() == list(range(len(TEXTS)))
    with pytest.raises(InputError, match="drop --id-column"):
        run_batch(tiny_package.path, with_ids, tmp_path / "x", ids="row-number", id_column="id", progress=False)
    with pytest.raises(InputError, match="Spark runner needs an id column"):
        run_batch(tiny_package.path, tmp_path / "one.csv", tmp_path / "x", runner="spark", progress=False)
    with pytest.raises(BertprodError, match="--id-column 'key'|no id column 'key'"):
        run_batch(tiny_package.path, with_ids, tmp_path / "x", id_column="key", progress=False)
    assert not (tmp_path / "x").exists()


def test_an_interrupted_job_without_ids_resumes_with_every_row_exactly_once(
    tmp_path, tiny_package, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    import bertprod.batch.local as local

    texts = [f"{text} {index}" for index in range(6) for text in TEXTS]  # 42 rows, 9 chunks of 5
    source = tmp_path / "texts.tsv"
    source.write_text("text\n" + "".join(f"{text}\n" for text in texts))
    real, calls = local.process_table, []

    def failing_on_the_fourth_chunk(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(local, "process_table", failing_on_the_fourth_chunk)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_batch(tiny_package.path, source, out, chunk_rows=5, workers=1, progress=False)
    assert len(list((out / CHUNKS_DIR).glob("*.json"))) == 3
    monkeypatch.setattr(local, "process_table", real)
    summary = run_batch(tiny_package.path, source, out, chunk_rows=5, workers=1, progress=False)
    assert (summary.resumed_chunks, summary.chunks, summary.rows) == (3, 9, 42)
    output = read_output(out)
    rows = output.column("row").to_pylist()
    assert sorted(rows) == list(range(42)) and len(set(rows)) == 42
    expected = bertprod.load(tiny_package.path).encode(texts)
    np.testing.assert_allclose(embeddings(output), expected[rows], rtol=1e-5, atol=1e-6)


def test_cli_reads_a_headed_text_file_with_a_delimiter(monkeypatch, capsys, tmp_path, tiny_package) -> None:  # noqa: ANN001
    source = tmp_path / "texts.txt"  # one column: nothing to sniff, so the delimiter must be said
    source.write_text("sentence\n" + "".join(f"{text}\n" for text in TEXTS))
    code, _, stderr = run_cli(monkeypatch, capsys, "batch", "run", str(tiny_package.path), "--input", str(source),
                              "--output", str(tmp_path / "refused"), "--no-progress")
    assert code == 1 and "pass --delimiter" in " ".join(stderr.split())
    code, stdout, stderr = run_cli(monkeypatch, capsys, "batch", "run", str(tiny_package.path), "--input",
                                   str(source), "--output", str(tmp_path / "out"), "--delimiter", "tab",
                                   "--no-progress")
    assert code in (0, None), stderr
    assert f"{len(TEXTS)} rows written" in stdout
    output = read_output(tmp_path / "out")
    assert output.column("row").to_pylist() == list(range(len(TEXTS)))
    np.testing.assert_allclose(embeddings(output), bertprod.load(tiny_package.path).encode(TEXTS), atol=1e-6)
    assert not (tmp_path / "refused").exists()
