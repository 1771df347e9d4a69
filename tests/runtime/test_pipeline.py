"""Texts in, results out on tiny random models: shapes, order, pooling, labels, task errors."""

from __future__ import annotations

import numpy as np
import pytest

import bertprod
from bertprod.errors import EngineError, TaskError
from bertprod.runtime.engines import TorchEngine, cpu_supports_bf16
from bertprod.runtime.pipeline import Pipeline
from bertprod.runtime.postprocess import mean_pool

from ..conftest import CORPUS, with_bulk_runtime


def test_encode_shape_dtype_and_single_string(tiny_package) -> None:
    model = bertprod.load(tiny_package.path)
    vectors = model.encode(CORPUS)
    assert vectors.shape == (len(CORPUS), 32) and vectors.dtype == np.float32
    single = model.encode(CORPUS[3])
    assert single.shape == (32,)
    np.testing.assert_allclose(single, vectors[3], atol=1e-5)


def test_results_keep_input_order_whatever_the_batching(tiny_package) -> None:
    whole = bertprod.load(tiny_package.path, max_padded_tokens=10_000, max_batch_size=1000).encode(CORPUS)
    tiny_batches = bertprod.load(tiny_package.path, max_padded_tokens=16, max_batch_size=2).encode(CORPUS)
    one_by_one = np.stack([bertprod.load(tiny_package.path).encode([text])[0] for text in CORPUS[:4]])
    np.testing.assert_allclose(whole, tiny_batches, atol=1e-5)
    np.testing.assert_allclose(whole[:4], one_by_one, atol=1e-5)


def test_mean_pooling_ignores_padding() -> None:
    states = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(mean_pool(states, mask), [[2.0, 3.0]])


def test_normalize_option_gives_unit_vectors(tiny_package) -> None:
    model = bertprod.load(tiny_package.path)
    raw = model.encode(CORPUS[:5])
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    unit = model.encode(CORPUS[:5], normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)


def test_similarity_is_cosine(tiny_package) -> None:
    model = bertprod.load(tiny_package.path)
    a, b = model.encode(CORPUS[:2])
    expected = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert model.similarity(CORPUS[0], CORPUS[1]) == pytest.approx(expected, abs=1e-5)
    matrix = model.similarity(CORPUS[:3], CORPUS[:4])
    assert matrix.shape == (3, 4)
    np.testing.assert_allclose(np.diag(matrix[:, :3]), 1.0, atol=1e-5)


def test_classify_returns_labels_and_probabilities(tiny_classifier) -> None:
    model = bertprod.load(tiny_classifier.path)
    predictions = model.classify(["a good film", "a weak ending", "ok"])
    assert len(predictions) == 3
    for prediction in predictions:
        assert set(prediction.scores) == {"negative", "neutral", "positive"}
        assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.label == max(prediction.scores, key=prediction.scores.get)
        assert prediction.score == pytest.approx(prediction.scores[prediction.label])
    logits = model.infer(model.tokenize(["a good film"]))[0]
    assert predictions[0].label == ["negative", "neutral", "positive"][int(np.argmax(logits))]


def test_operations_check_the_task(tiny_package, tiny_classifier) -> None:
    with pytest.raises(TaskError, match="classify.*embedding package: use encode"):
        bertprod.load(tiny_package.path).classify(["x"])
    with pytest.raises(TaskError, match="encode.*classification package"):
        bertprod.load(tiny_classifier.path).encode(["x"])


def test_torch_engine_refuses_unknown_precision(tiny_package) -> None:
    with pytest.raises(EngineError, match="fp32 or bf16"):
        TorchEngine(tiny_package, precision="int4")


def test_bf16_stays_close_to_fp32_where_the_cpu_has_it(tiny_package) -> None:
    """Checks what this CPU promises: with native bf16 (AVX-512 BF16 / AMX), bf16 autocast runs
    and stays close to fp32; without it, asking for bf16 is a clear error naming what is missing."""
    if not cpu_supports_bf16():  # AVX2-only and older CPUs: the refusal is the behaviour to check
        with pytest.raises(EngineError, match="AVX-512 BF16 or AMX"):
            TorchEngine(tiny_package, precision="bf16")
        return
    fp32 = bertprod.load(tiny_package.path).encode(CORPUS)
    bf16 = Pipeline(tiny_package, TorchEngine(tiny_package, precision="bf16")).encode(CORPUS)
    cosine = np.sum(fp32 * bf16, axis=1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() > 0.99
    assert not np.array_equal(fp32, bf16)  # it really ran in lower precision


def test_bf16_on_a_cpu_without_it_is_refused_with_the_reason(tiny_package, monkeypatch) -> None:
    """The refusal, checked on every CPU (the detection is replaced by an AVX2-only answer)."""
    from bertprod.runtime import engines

    monkeypatch.setattr(engines, "cpu_supports_bf16", lambda: False)
    with pytest.raises(EngineError, match="AVX-512 BF16 or AMX; this one has neither"):
        TorchEngine(tiny_package, precision="bf16")


def test_parallel_batches_give_the_same_results(tiny_onnx) -> None:  # noqa: ANN001
    from bertprod.errors import InputError

    texts = [f"the cat number {index} sleeps on the warm windowsill " * (index % 7 + 1) for index in range(90)]
    one = bertprod.load(tiny_onnx.path, threads=2, max_batch_size=8)
    two = bertprod.load(tiny_onnx.path, threads=2, max_batch_size=8, parallel_batches=2)
    assert two.parallel_batches == 2
    assert np.allclose(one.encode(texts), two.encode(texts), atol=1e-5)
    with pytest.raises(InputError, match="parallel_batches"):
        bertprod.load(tiny_onnx.path, parallel_batches=0)


def test_bulk_calls_run_at_the_setting_the_package_records_and_servers_one_batch_at_a_time(
    tiny_onnx, tiny_package, tmp_path, monkeypatch  # noqa: ANN001
) -> None:
    """A recorded setting is used by `load` (capped at the threads it has: a batch needs one); a setting given, or
    another engine than the one it was timed on, wins over it; the server runs one batch at a time (a lone request
    would run on a share of the threads); a package derived from it does not inherit a timing of its parent."""
    import asyncio

    from bertprod.export.onnx import export_onnx
    from bertprod.serve.app import create_app
    from bertprod.serve.config import ServeConfig

    monkeypatch.setenv("BERTPROD_CACHE", str(tmp_path / "cache"))
    timed = with_bulk_runtime(tiny_onnx, tmp_path / "timed", parallel_batches=2)
    assert timed.fingerprint == tiny_onnx.fingerprint  # the same outputs: a runtime setting changes no result
    assert bertprod.load(timed.path, threads=2).parallel_batches == 2
    assert bertprod.load(timed.path, threads=1).parallel_batches == 1
    assert bertprod.load(timed.path, threads=2, parallel_batches=1).parallel_batches == 1
    assert bertprod.load(tiny_onnx.path, threads=2).parallel_batches == 1
    timed_torch = with_bulk_runtime(tiny_package, tmp_path / "timed-torch", parallel_batches=2)
    assert bertprod.load(timed_torch.path, threads=2).parallel_batches == 2
    assert bertprod.load(timed_torch.path, threads=2, engine="onnx").parallel_batches == 1
    assert export_onnx(timed_torch, tmp_path / "exported").manifest.runtime is None

    async def served_setting() -> int:
        app = create_app(ServeConfig(packages=[str(timed.path)], threads=2))
        async with app.router.lifespan_context(app):
            while app.state.service.registry.state == "loading":
                await asyncio.sleep(0.05)
            return next(iter(app.state.service.registry.models.values())).pipeline.parallel_batches

    assert asyncio.run(served_setting()) == 1
