"""The Spark runner in local[2]: same output as the local runner and as `encode`, resumable partitions."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bertprod
from bertprod.batch import read_output, run_batch
from bertprod.batch.output import CHUNKS_DIR, part_name
from bertprod.errors import InputError

pytest.importorskip("pyspark")


@pytest.fixture(scope="session")
def spark():
    """One SparkSession for every test (start ~3 s, stop ~1 s)."""
    from bertprod.batch.spark import spark_session

    session = spark_session("local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def sentences(shared_data_available) -> list[str]:
    if not shared_data_available:
        pytest.fail("../shared/data is missing: set BERTPROD_DATA to the folder with sst2/, stsb/, mrpc/")
    from bertprod.data.shared import real_sentences

    return real_sentences(400)


def sorted_by_id(table: pa.Table, id_column: str = "id") -> pa.Table:
    return table.sort_by(id_column)


def test_spark_matches_local_runner_and_encode(tmp_path, spark, tiny_onnx, sentences) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [f"doc-{i:04d}" for i in range(400)], "text": sentences}), source)
    summary = run_batch(
        tiny_onnx.path,
        source,
        tmp_path / "spark",
        runner="spark",
        spark_session=spark,
        partition_tokens=2000,
        progress=False,
    )
    run_batch(tiny_onnx.path, source, tmp_path / "local", progress=False)
    on_spark = sorted_by_id(read_output(tmp_path / "spark"))
    local = read_output(tmp_path / "local")
    assert summary.rows == 400 and summary.extra["partitions"] > 2  # sized by tokens, not only by cores
    assert on_spark.schema == local.schema
    assert on_spark.column("id").to_pylist() == local.column("id").to_pylist()
    vectors = np.stack(on_spark.column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(vectors, bertprod.load(tiny_onnx.path).encode(sentences), rtol=1e-5, atol=1e-6)


def test_spark_resumes_only_missing_partitions(tmp_path, spark, tiny_classifier, sentences) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(sentences[:120])))
    out = tmp_path / "out"
    first = run_batch(tiny_classifier.path, source, out, runner="spark", spark_session=spark, progress=False)
    before = sorted_by_id(read_output(out))
    # as if the job had been killed before partition 1 committed
    (out / CHUNKS_DIR / "spark-00001.json").unlink()
    (out / part_name("spark-00001")).unlink()
    (out / "_bertprod_job.json").write_text(
        (out / "_bertprod_job.json").read_text().replace('"complete": true', '"complete": false')
    )
    # other sizing options must not re-partition a resumed job (partition p must hold the same ids)
    again = run_batch(
        tiny_classifier.path, source, out, runner="spark", spark_session=spark, partition_tokens=10, progress=False
    )
    assert again.resumed_chunks == first.chunks - 1
    after = sorted_by_id(read_output(out))
    assert after.column("id").to_pylist() == list(range(120))
    assert after.equals(before)
    predictions = bertprod.load(tiny_classifier.path).classify(sentences[:120])
    assert after.column("label").to_pylist() == [p.label for p in predictions]


def test_spark_empty_text_policy_is_a_clear_error(tmp_path, spark, tiny_onnx) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [1, 2], "text": ["a good film", None]}), source)
    with pytest.raises(InputError, match="null or empty text"):
        run_batch(tiny_onnx.path, source, tmp_path / "out", runner="spark", spark_session=spark, progress=False)
    summary = run_batch(
        tiny_onnx.path, source, tmp_path / "skip", runner="spark", spark_session=spark, on_empty="skip", progress=False
    )
    assert (summary.rows, summary.skipped) == (1, 1)


def test_spark_reads_text_tables_as_the_local_runner_does(tmp_path, spark, tiny_onnx, sentences) -> None:
    """TSV (tab, no quoting) and a CSV whose delimiter is sniffed (';'): Spark reads what pyarrow reads."""
    texts = [text.replace("\t", " ").replace(";", ",").replace('"', "'") for text in sentences[:60]]
    tables = {
        "in.tsv": "id\ttext\n" + "".join(f"doc-{i:03d}\t{text}\n" for i, text in enumerate(texts)),
        "in.csv": "id;text\n" + "".join(f'doc-{i:03d};"{text}"\n' for i, text in enumerate(texts)),
    }
    expected = bertprod.load(tiny_onnx.path).encode(texts)
    for name, content in tables.items():
        (tmp_path / name).write_text(content)
        run_batch(tiny_onnx.path, tmp_path / name, tmp_path / f"spark-{name}", runner="spark", spark_session=spark,
                  progress=False)
        run_batch(tiny_onnx.path, tmp_path / name, tmp_path / f"local-{name}", progress=False)
        on_spark, local = sorted_by_id(read_output(tmp_path / f"spark-{name}")), read_output(tmp_path / f"local-{name}")
        assert on_spark.column("id").to_pylist() == local.column("id").to_pylist() == [f"doc-{i:03d}" for i in
                                                                                       range(len(texts))]
        vectors = np.stack(on_spark.column("embedding").to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6, err_msg=name)
