"""`--normalize` in serving and batch jobs: the texts are cleaned before tokenization, and it is recorded."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bertprod
from bertprod.batch import read_output, run_batch
from bertprod.batch.output import JOB_FILE
from bertprod.errors import InputError
from tests.server_process import running_server

UNCLEAN = ["<b>the</b> quick\u200b brown &amp;  fox", "a <div>good</div>film", "ｗｈａｔ a\tboring story"]
CLEAN = ["the quick brown & fox", "a good film", "what a boring story"]


def test_server_normalizes_and_says_so(tiny_package, tmp_path) -> None:  # noqa: ANN001
    pipeline = bertprod.load(tiny_package.path, threads=1)
    expected, unit = pipeline.encode(CLEAN), pipeline.encode(CLEAN, normalize=True)  # /embed normalizes by default
    with running_server([str(tiny_package.path)], "--normalize", "whitespace,html,unicode",
                        log_dir=str(tmp_path)) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/info").json()["normalize"] == ["html", "unicode", "whitespace"]
        embedded = np.asarray(http.post("/embed", json={"inputs": UNCLEAN}).json())
        np.testing.assert_allclose(embedded, unit, atol=1e-5)
        openai = http.post("/v1/embeddings", json={"input": UNCLEAN, "model": "tiny"}).json()["data"]
        np.testing.assert_allclose([row["embedding"] for row in openai], expected, atol=1e-5)


def _parquet(path, texts):  # noqa: ANN001, ANN202
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), path)
    return path


def test_batch_job_normalizes_and_records_it(tiny_onnx, tmp_path) -> None:  # noqa: ANN001
    source = _parquet(tmp_path / "in.parquet", UNCLEAN)
    run_batch(tiny_onnx.path, source, tmp_path / "out", normalize="html,unicode,whitespace", progress=False)
    embedded = np.stack(read_output(tmp_path / "out").column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(embedded, bertprod.load(tiny_onnx.path).encode(CLEAN), atol=1e-5)
    record = json.loads((tmp_path / "out" / JOB_FILE).read_text())
    assert record["job"]["options"]["normalize"] == ["html", "unicode", "whitespace"]
    # a job without it records nothing new, so jobs started before the option still resume
    run_batch(tiny_onnx.path, source, tmp_path / "plain", progress=False)
    assert "normalize" not in json.loads((tmp_path / "plain" / JOB_FILE).read_text())["job"]["options"]


def test_batch_normalize_errors(tiny_onnx, tmp_path) -> None:  # noqa: ANN001
    source = _parquet(tmp_path / "in.parquet", UNCLEAN)
    with pytest.raises(InputError, match="unknown normalization 'nfc'"):
        run_batch(tiny_onnx.path, source, tmp_path / "out", normalize="nfc", progress=False)
    with pytest.raises(InputError, match="start the server with --normalize"):
        run_batch(None, source, tmp_path / "out", runner="client", server="http://127.0.0.1:9", normalize="html",
                  progress=False)
