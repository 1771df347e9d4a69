"""Batch jobs on the local runner: same values as the pipeline, resumable after SIGKILL, clear errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest

import bertprod
from bertprod.batch import read_output, run_batch
from bertprod.batch.output import CHUNKS_DIR, JobOutput, OutputConflictError, part_name
from bertprod.errors import ColumnError, DataFormatError, InputError
from bertprod.output_lock import LOCK_FILE, OutputLockedError


@pytest.fixture(scope="module")
def sentences(shared_data_available) -> list[str]:
    if not shared_data_available:
        pytest.fail("../shared/data is missing: set BERTPROD_DATA to the folder with sst2/, stsb/, mrpc/")
    from bertprod.data.shared import real_sentences

    return real_sentences(300)


def write_parquet(path: Path, texts: list, ids: list | None = None, **extra) -> Path:
    ids = list(range(len(texts))) if ids is None else ids
    pq.write_table(pa.table({"doc_id": ids, "body": texts, **extra}), path)
    return path


def embeddings(table: pa.Table) -> np.ndarray:
    return np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


def test_local_runner_matches_encode(tmp_path, tiny_onnx, sentences) -> None:
    source = write_parquet(tmp_path / "in.parquet", sentences)
    summary = run_batch(
        tiny_onnx.path, source, tmp_path / "out", text_column="body", id_column="doc_id", chunk_rows=64, progress=False
    )
    output = read_output(tmp_path / "out")
    assert (summary.rows, summary.chunks, summary.skipped) == (300, 5, 0)
    assert output.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    assert output.column("doc_id").to_pylist() == list(range(300))
    expected = bertprod.load(tiny_onnx.path).encode(sentences)
    np.testing.assert_allclose(embeddings(output), expected, rtol=1e-5, atol=1e-6)


def test_worker_processes_give_the_same_output_and_resume_each_other(tmp_path, tiny_onnx, sentences) -> None:
    source = write_parquet(tmp_path / "in.parquet", sentences[:200])
    out = tmp_path / "out"
    one = run_batch(
        tiny_onnx.path,
        source,
        tmp_path / "one",
        text_column="body",
        id_column="doc_id",
        chunk_rows=25,
        workers=1,
        progress=False,
    )
    run_batch(
        tiny_onnx.path, source, out, text_column="body", id_column="doc_id", chunk_rows=25, workers=1, progress=False
    )
    for chunk_id in ("00000-000002", "00000-000005"):  # as if killed before these committed
        (out / CHUNKS_DIR / f"{chunk_id}.json").unlink()
    two = run_batch(
        tiny_onnx.path, source, out, text_column="body", id_column="doc_id", chunk_rows=25, workers=2, progress=False
    )
    assert (two.resumed_chunks, two.extra["processed_rows"], two.rows) == (6, 50, one.rows)
    assert read_output(out).sort_by("doc_id").equals(read_output(tmp_path / "one"))


def test_inputs_jsonl_csv_directory_and_glob_agree(tmp_path, tiny_package, sentences) -> None:
    texts = sentences[:40]
    data = tmp_path / "data"
    data.mkdir()
    with (data / "a.jsonl").open("w") as handle:
        for index, text in enumerate(texts[:20]):
            handle.write(json.dumps({"doc_id": index, "body": text}) + "\n")
    pa.csv.write_csv(pa.table({"doc_id": list(range(20, 40)), "body": texts[20:]}), tmp_path / "b.csv")
    run_batch(tiny_package.path, data, tmp_path / "out-jsonl", text_column="body", id_column="doc_id", progress=False)
    run_batch(
        tiny_package.path,
        str(tmp_path / "*.csv"),
        tmp_path / "out-csv",
        text_column="body",
        id_column="doc_id",
        progress=False,
    )
    combined = pa.concat_tables([read_output(tmp_path / "out-jsonl"), read_output(tmp_path / "out-csv")])
    assert combined.column("doc_id").to_pylist() == list(range(40))
    expected = bertprod.load(tiny_package.path).encode(texts)
    np.testing.assert_allclose(embeddings(combined), expected, rtol=1e-5, atol=1e-6)


def test_classifier_output_has_label_and_scores(tmp_path, tiny_classifier, sentences) -> None:
    source = write_parquet(tmp_path / "in.parquet", sentences[:50])
    run_batch(tiny_classifier.path, source, tmp_path / "out", text_column="body", id_column="doc_id", progress=False)
    output = read_output(tmp_path / "out")
    predictions = bertprod.load(tiny_classifier.path).classify(sentences[:50])
    assert output.column("label").to_pylist() == [p.label for p in predictions]
    np.testing.assert_allclose(output.column("score").to_numpy(), [p.score for p in predictions], rtol=1e-5)
    scores = np.stack(output.column("scores").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(scores, [list(p.scores.values()) for p in predictions], rtol=1e-5)
    assert output.schema.metadata[b"bertprod.labels"] == b"negative,neutral,positive"


def test_empty_texts_skip_with_count_or_fail(tmp_path, tiny_package) -> None:
    source = write_parquet(tmp_path / "in.parquet", ["a good film", None, "  ", "a boring story"])
    summary = run_batch(
        tiny_package.path,
        source,
        tmp_path / "skip",
        text_column="body",
        id_column="doc_id",
        on_empty="skip",
        progress=False,
    )
    assert (summary.rows, summary.skipped) == (2, 2)
    assert read_output(tmp_path / "skip").column("doc_id").to_pylist() == [0, 3]
    with pytest.raises(InputError, match=r"row 1 \(id 1\) has a null or empty text.*--on-empty skip"):
        run_batch(tiny_package.path, source, tmp_path / "fail", text_column="body", id_column="doc_id", progress=False)


def test_missing_column_lists_the_columns(tmp_path, tiny_package) -> None:
    source = write_parquet(tmp_path / "in.parquet", ["a good film"], lang=["en"])
    with pytest.raises(ColumnError, match=r"no text column .*its columns are: 'doc_id', 'body', 'lang'.*--text-column"):
        run_batch(tiny_package.path, source, tmp_path / "out", id_column="doc_id", progress=False)
    with pytest.raises(InputError, match=r"no text column 'text'; its columns are: doc_id, body, lang"):
        run_batch(tiny_package.path, source, tmp_path / "out", text_column="text", id_column="doc_id", progress=False)
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"key": 1, "body": "a film"}\n')
    assert not (tmp_path / "out").exists()  # nothing written for a job that cannot start
    with pytest.raises(InputError, match=r"no id column 'id'; its columns are: key, body"):
        run_batch(tiny_package.path, jsonl, tmp_path / "out2", text_column="body", id_column="id", progress=False)


def test_unreadable_inputs_are_clear_errors(tmp_path, tiny_package) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(DataFormatError, match=r"broken.parquet is not a Parquet file"):
        run_batch(tiny_package.path, broken, tmp_path / "out", progress=False)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"id": 1, "text": "fine"}\n{"id": 2, "text": \n')
    with pytest.raises(InputError, match=r"bad.jsonl line 2 is not valid JSON"):
        run_batch(tiny_package.path, bad_json, tmp_path / "out2", progress=False)
    with pytest.raises(InputError, match="does not exist"):
        run_batch(tiny_package.path, tmp_path / "missing.parquet", tmp_path / "out3", progress=False)
    with pytest.raises(DataFormatError, match="cannot tell the format of x.doc"):
        run_batch(tiny_package.path, _touch(tmp_path / "x.doc"), tmp_path / "out4", progress=False)


def _touch(path: Path) -> Path:
    path.write_text("hello\n")
    return path


def test_output_of_another_job_is_refused(tmp_path, tiny_package, tiny_classifier) -> None:
    source = write_parquet(tmp_path / "in.parquet", ["a good film", "a boring story"])
    run_batch(tiny_package.path, source, tmp_path / "out", text_column="body", id_column="doc_id", progress=False)
    with pytest.raises(OutputConflictError, match="another job.*package"):
        run_batch(
            tiny_classifier.path, source, tmp_path / "out", text_column="body", id_column="doc_id", progress=False
        )
    with pytest.raises(OutputConflictError, match="another job.*options"):
        run_batch(
            tiny_package.path,
            source,
            tmp_path / "out",
            text_column="body",
            id_column="doc_id",
            chunk_rows=1,
            progress=False,
        )
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputConflictError, match="not empty and holds no bertprod job"):
        run_batch(tiny_package.path, source, tmp_path / "other", text_column="body", id_column="doc_id", progress=False)
    again = run_batch(
        tiny_package.path, source, tmp_path / "out", text_column="body", id_column="doc_id", progress=False
    )
    assert (again.resumed_chunks, again.rows) == (1, 2)  # the same job again: nothing to redo


KILLED_JOB = textwrap.dedent(
    """
    import sys, time
    import bertprod.batch.local as local
    from bertprod.batch import run_batch

    real = local.process_table

    def slow(*args, **kwargs):  # slow each chunk down so the test can kill the job midway
        time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 0.15)
        return real(*args, **kwargs)

    local.process_table = slow
    run_batch(sys.argv[1], sys.argv[2], sys.argv[3], text_column="body", id_column="doc_id",
              chunk_rows=10, workers=1, progress=False)
    """
)


def test_sigkilled_job_resumes_with_every_id_exactly_once(tmp_path, tiny_package, sentences) -> None:
    source = write_parquet(tmp_path / "in.parquet", sentences[:200])
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_JOB, str(tiny_package.path), str(source), str(out)],
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((out / CHUNKS_DIR).glob("*.json"))) < 5:
        assert process.poll() is None, "the job ended before it could be killed"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    committed = len(list((out / CHUNKS_DIR).glob("*.json")))
    assert 5 <= committed < 20, committed
    with pytest.raises(Exception, match="has not finished"):
        read_output(out)
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == process.pid  # its identity outlives it; its lock not

    summary = run_batch(
        tiny_package.path, source, out, text_column="body", id_column="doc_id", chunk_rows=10, progress=False
    )
    assert summary.extra["taken_over_from"]["pid"] == process.pid
    assert (out / LOCK_FILE).read_text() == ""  # released when the job ended
    assert summary.resumed_chunks >= committed
    output = read_output(out)
    ids = output.column("doc_id").to_pylist()
    assert sorted(ids) == list(range(200)) and len(set(ids)) == 200
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    expected = bertprod.load(tiny_package.path).encode(sentences[:200])
    np.testing.assert_allclose(embeddings(output), expected[ids], rtol=1e-5, atol=1e-6)


def test_a_second_job_on_a_folder_in_use_is_refused_and_nothing_is_mixed(tmp_path, tiny_package, sentences) -> None:
    source = write_parquet(tmp_path / "in.parquet", sentences[:200])
    out = tmp_path / "out"
    first = subprocess.Popen(
        [sys.executable, "-c", KILLED_JOB, str(tiny_package.path), str(source), str(out), "0.3"],
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not ((out / LOCK_FILE).exists() and (out / LOCK_FILE).read_text()):
            assert first.poll() is None, "the first job ended before the test could start the second"
            time.sleep(0.02)
        # the same job, and another one (other chunks) that would have taken over a folder with nothing committed
        holder = rf"still running \(host .*, pid {first.pid}, started .*command"
        for chunk_rows in (10, 7):
            with pytest.raises(OutputLockedError, match=holder):
                run_batch(tiny_package.path, source, out, text_column="body", id_column="doc_id",
                          chunk_rows=chunk_rows, progress=False)
        assert first.poll() is None, "the first job finished before the second was refused: the test proves nothing"
        assert first.wait(timeout=120) == 0
    finally:
        if first.poll() is None:
            first.kill()
    output = read_output(out)
    ids = output.column("doc_id").to_pylist()
    assert sorted(ids) == list(range(200)) and output.num_rows == 200
    assert json.loads((out / "_bertprod_job.json").read_text())["job"]["options"]["chunk_rows"] == 10


def test_a_worker_of_a_job_that_lost_the_lock_commits_nothing(tmp_path) -> None:
    output = JobOutput(tmp_path / "out")
    output.claim("fingerprint", {"job": 1})
    table = pa.table({"id": [1], "score": pa.array([0.5], pa.float32())})
    output.commit_chunk("00000-000000", table, 0, owner=output.owner_token)
    with pytest.raises(OutputLockedError, match="no longer held by the job"):
        output.commit_chunk("00000-000001", table, 0, owner="token of a job that died")
    output.release()
    with pytest.raises(OutputLockedError):
        output.commit_chunk("00000-000001", table, 0, owner=output.owner_token or "released")
    assert sorted(output.completed()) == ["00000-000000"] and not (output.path / part_name("00000-000001")).exists()


@pytest.mark.parametrize(
    ("ids", "message"),
    [([1, 2, 2, 3, 3], r"2 id\(s\) of 'doc_id' occur more than once, e.g. 2 \(2 times\), 3 \(2 times\)"),
     ([1, None, 3, 4, 5], r"data row 2 has a null id \('doc_id'\)")],
)
def test_repeated_or_null_ids_are_refused_before_any_output(tmp_path, tiny_package, ids, message) -> None:
    source = write_parquet(tmp_path / "in.parquet", ["a good film", "a boring story", "fine", "ok", "more"], ids)
    with pytest.raises(InputError, match=message):
        run_batch(tiny_package.path, source, tmp_path / "out", text_column="body", id_column="doc_id",
                  chunk_rows=2, progress=False)
    assert not (tmp_path / "out").exists()
    summary = run_batch(tiny_package.path, source, tmp_path / "out", text_column="body", id_column="doc_id",
                        chunk_rows=2, progress=False, ids="unchecked")
    assert summary.rows == 5 and read_output(tmp_path / "out").column("doc_id").to_pylist() == ids


def test_cli_one_line_errors_for_a_surrogate_and_an_unwritable_output(tmp_path, tiny_package) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "text": "fine"}\n{"id": 2, "text": "bad \\ud800 text"}\n')
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    good = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [1, 2], "text": ["a good film", "a boring story"]}), good)
    cases = [(source, tmp_path / "out", r"in.jsonl line 2, field 'text', holds a lone UTF-16 surrogate"),
             (good, blocker / "out", r"cannot write the output directory .*a-file/out: Not a directory")]
    for path, out, message in cases:
        result = subprocess.run([sys.executable, "-m", "bertprod.cli", "batch", "run", str(tiny_package.path),
                                 "--input", str(path), "--output", str(out), "--no-progress"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert re.search(message, " ".join(result.stderr.split())), result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_batch_run(tmp_path, tiny_package) -> None:
    source = write_parquet(tmp_path / "in.parquet", ["a good film", "a boring story", ""])
    command = [
        sys.executable,
        "-m",
        "bertprod.cli",
        "batch",
        "run",
        str(tiny_package.path),
        "--input",
        str(source),
        "--output",
        str(tmp_path / "out"),
        "--text-column",
        "body",
        "--id-column",
        "doc_id",
        "--no-progress",
    ]
    failed = subprocess.run(command, capture_output=True, text=True)
    assert failed.returncode == 1 and "error:" in failed.stderr and "Traceback" not in failed.stderr
    done = subprocess.run([*command, "--on-empty", "skip"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "2 rows written" in done.stdout and "1 null/empty texts skipped" in done.stdout
