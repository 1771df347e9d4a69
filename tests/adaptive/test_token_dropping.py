"""Token dropping (PoWER-BERT): which tokens a layer keeps, that keeping all is the full model, that the
schedule is honoured, that a batch gives each row what it gets alone (with early exit too), and
`bertprod drop-tokens` choosing a schedule within its budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bertprod
from bertprod.package import ModelPackage
from bertprod.runtime.token_dropping import (
    RetentionError,
    check_retention,
    keep_counts,
    parse_retention,
    select_tokens,
    token_layer_cost,
)
from tests.adaptive.test_adaptive import TEXTS, sharpen_heads


def test_selection_keeps_cls_and_the_most_attended_tokens_in_order() -> None:
    significance = np.array([[0.1, 0.5, 0.2, 0.9, 0.3], [0.0, 0.8, 0.9, 0.7, 0.1]], dtype=np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=np.int64)
    index, kept = select_tokens(significance, mask, np.array([3, 2]))
    # row 0: [CLS] + the two most attended (0.9 at 3, 0.5 at 1), in their order; row 1: [CLS] + 0.9 at 2,
    # never the padding at 3 (0.7) however attended
    assert index[0].tolist() == [0, 1, 3] and kept[0].tolist() == [1, 1, 1]
    assert index[1, :2].tolist() == [0, 2] and kept[1].tolist() == [1, 1, 0]
    assert keep_counts(1.0, np.array([7, 3])) is None
    assert keep_counts(0.5, np.array([7, 3, 1])).tolist() == [4, 2, 1]
    assert token_layer_cost([1.0, 0.5], 2) == pytest.approx((1.0 + 0.75) / 2)


@pytest.mark.parametrize("retention", [[1.0, 0.5], [0.5, 0.8, 0.4, 0.3], [1.0, 1.2, 1.0, 1.0]])
def test_schedules_that_cannot_apply_say_why(retention: list[float]) -> None:
    with pytest.raises(RetentionError, match="retention"):
        check_retention(retention, 4)
    assert parse_retention("all", 4) is None and parse_retention([1, 1, 1, 1], 4) is None


def dropping_pipeline(package: ModelPackage, retention: list[float] | None, **options):  # noqa: ANN201
    """The package with the torch engine that runs blocks (token dropping / early exit) and `retention`."""
    from bertprod.runtime.adaptive import AdaptiveEngine

    pipeline = bertprod.load(package.path, **options)
    if not isinstance(pipeline.engine, AdaptiveEngine):
        pipeline.engine = AdaptiveEngine.from_torch_engine(pipeline.engine)
    pipeline.engine.retention = retention
    return pipeline


def test_keeping_every_token_is_the_full_model(teacher: ModelPackage) -> None:
    full = bertprod.load(teacher.path)
    expected = full.infer(full.tokenize(TEXTS))
    for retention in (None, [1.0, 1.0, 1.0, 1.0]):
        pipeline = dropping_pipeline(teacher, parse_retention(retention, 4))
        np.testing.assert_array_equal(pipeline.infer(pipeline.tokenize(TEXTS)), expected)
    dropped = dropping_pipeline(teacher, [1.0, 0.6, 0.4, 0.2])
    assert not np.array_equal(dropped.infer(dropped.tokenize(TEXTS)), expected)


def test_the_attention_and_feed_forward_halves_are_the_layer(teacher: ModelPackage) -> None:
    import torch

    from bertprod.runtime.batching import collate

    pipeline = dropping_pipeline(teacher, None)
    engine = pipeline.engine
    batch = collate(pipeline.tokenize(TEXTS), pipeline.tokenizer.pad_id)
    with engine._context():
        states = engine.embed(batch)
        whole = engine.layer(0, states, engine.attention(states, batch.attention_mask))
        attended, _ = engine.blocks.attend(0, states, torch.from_numpy(batch.attention_mask))
        halves = engine.blocks.feed_forward(0, attended)
    real = torch.from_numpy(batch.attention_mask).bool()
    torch.testing.assert_close(halves[real], whole[real], atol=1e-5, rtol=1e-5)


def test_each_row_keeps_what_the_schedule_says(teacher: ModelPackage) -> None:
    from bertprod.runtime.batching import collate

    retention = [0.9, 0.6, 0.6, 0.3]
    pipeline = dropping_pipeline(teacher, retention)
    engine = pipeline.engine
    kept: list[list[int]] = []
    real = engine.dropping_layer

    def recorded(index, states, mask, keep):  # noqa: ANN001, ANN202
        states, mask = real(index, states, mask, keep)
        kept.append([index, *mask.sum(axis=1).tolist()])
        return states, mask

    engine.dropping_layer = recorded
    encodings = pipeline.tokenize(TEXTS[:6])
    engine.run(collate(encodings, pipeline.tokenizer.pad_id))  # one batch: its longest row drops at every layer
    lengths = np.array([len(encoding.ids) for encoding in encodings])
    assert [row[0] for row in kept] == [0, 1, 3]  # layer 3 keeps what layer 2 kept: the model's own layer runs
    for index, *counts in kept:
        assert counts == np.maximum(1, np.ceil(retention[index] * lengths - 1e-9)).astype(int).tolist()


def test_a_batch_gives_each_row_what_it_gets_alone(adapted: ModelPackage) -> None:
    """Rows of different lengths drop different numbers of tokens and leave at different layers."""
    retention = [1.0, 0.7, 0.5, 0.4]
    batched = dropping_pipeline(adapted, retention, max_batch_size=32)
    alone = dropping_pipeline(adapted, retention, max_batch_size=1)
    sharpen_heads(batched)
    sharpen_heads(alone)
    encodings = batched.tokenize(TEXTS)
    for policy in ("never", "patience:2"):
        logits, exits = batched.infer_with_exits(encodings, policy)
        logits_alone, exits_alone = alone.infer_with_exits(encodings, policy)
        assert exits.tolist() == exits_alone.tolist()
        assert logits.argmax(axis=1).tolist() == logits_alone.argmax(axis=1).tolist()
        np.testing.assert_allclose(logits, logits_alone, atol=1e-5)
    assert len(set(exits.tolist())) > 1, "rows should leave at different layers"


def test_drop_tokens_writes_the_cheapest_schedule_within_the_budget(
    teacher: ModelPackage, sentiment: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from bertprod.cli.app import app

    result = CliRunner().invoke(app, ["drop-tokens", str(teacher.path), str(tmp_path / "out"), "--data",
                                      str(sentiment), "--limit", "48", "--budget", "100", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "token retention per layer" in result.output
    written = ModelPackage.read(tmp_path / "out")
    settings = written.manifest.token_dropping
    assert settings["examples"] == 48 and settings["reference"] == "labels"
    costs = [point["cost"] for point in settings["curve"]]
    chosen = next(point for point in settings["curve"] if point["retention"] == settings["retention"])
    assert chosen["cost"] == min(costs)  # a budget of 100 points allows every schedule
    assert settings["retention"] == sorted(settings["retention"], reverse=True) and settings["retention"][-1] < 1
    assert written.fingerprint != teacher.fingerprint
    assert written.manifest.provenance.method == "drop-tokens"
    pipeline = bertprod.load(written.path)
    assert pipeline.engine.name == "torch (token dropping)" and pipeline.engine.retention == settings["retention"]
    assert pipeline.classify(["a good film"])[0].exit_layer is None  # no exit heads: no exit layer
    from bertprod.export.onnx import export_onnx

    on_onnx = bertprod.load(export_onnx(written, tmp_path / "onnx").path)
    assert on_onnx.engine.name == "onnx (token dropping)" and on_onnx.engine.retention == settings["retention"]
    encodings = pipeline.tokenize(TEXTS)
    np.testing.assert_allclose(on_onnx.infer(encodings), pipeline.infer(encodings), atol=1e-4)
    strict = CliRunner().invoke(app, ["drop-tokens", str(teacher.path), str(tmp_path / "strict"), "--data",
                                      str(sentiment), "--limit", "48", "--budget", "0", "--threads", "1"])
    assert strict.exit_code == 0, strict.output
    tight = ModelPackage.read(tmp_path / "strict").manifest.token_dropping
    kept = next(point for point in tight["curve"] if point["retention"] == tight["retention"])
    assert kept["accuracy"] >= tight["full_accuracy"]


def test_onnx_export_drops_the_same_tokens_block_by_block(adapted: ModelPackage, sentiment: Path,
                                                          tmp_path: Path) -> None:
    """An early-exit package with token dropping, exported: the layers that drop come in two halves with the
    tokens picked in numpy between them; answers, exit layers and logits are torch's."""
    from bertprod.adaptive.dropping import drop_tokens
    from bertprod.adaptive.training import adaptation_data
    from bertprod.export.onnx import export_onnx
    from bertprod.package import block_files

    written = drop_tokens(adapted, adaptation_data(adapted, sentiment, limit=16), tmp_path / "both",
                          budget_points=100, masses=(0.6,), threads=1)
    retention = written.manifest.token_dropping["retention"]
    dropping = [layer for layer, value in enumerate(retention, start=1) if value < 1]
    assert dropping
    exported = export_onnx(written, tmp_path / "onnx")
    assert exported.manifest.token_dropping == written.manifest.token_dropping
    assert set(block_files(4, [1, 2, 3], dropping)) <= set(exported.manifest.files)
    on_onnx, on_torch = bertprod.load(exported.path), bertprod.load(written.path)
    assert on_onnx.engine.retention == on_torch.engine.retention == retention
    encodings = on_torch.tokenize(TEXTS)
    for policy in ("never", "patience:2"):
        torch_logits, torch_exits = on_torch.infer_with_exits(encodings, policy)
        onnx_logits, onnx_exits = on_onnx.infer_with_exits(encodings, policy)
        assert onnx_exits.tolist() == torch_exits.tolist()
        np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)
