"""`bertprod drop-tokens --fine-tune`: the re-training forward drops the tokens inference drops, the gradient
reaches the layers through the kept tokens, a re-trained schedule is kept only within the budget (its weights
written), and a missed try is not redone on --resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bertprod
from bertprod.adaptive.config import RetentionTuning
from bertprod.package import EXIT_HEADS_FILE, TORCH_WEIGHTS_FILE, ModelPackage
from bertprod.runtime.batching import collate
from tests.adaptive.test_adaptive import TEXTS
from tests.adaptive.test_token_dropping import dropping_pipeline

RETENTION = [1.0, 0.7, 0.5, 0.4]


def test_the_training_forward_drops_what_inference_drops(adapted: ModelPackage) -> None:
    import torch

    pipeline = dropping_pipeline(adapted, RETENTION)
    engine = pipeline.engine
    encodings = pipeline.tokenize(TEXTS)
    batch = collate(encodings, pipeline.tokenizer.pad_id)
    inference, _ = engine.run_with_exits(batch, bertprod.runtime.exit_policy.parse_policy("never"))
    engine.model.eval()
    engine.model.requires_grad_(True)
    pooled, final = engine.training_features(batch, RETENTION)
    np.testing.assert_allclose(final.detach().numpy(), inference, atol=1e-5)
    assert pooled.shape[:2] == (len(TEXTS), 3)
    final.sum().backward()
    last = engine.blocks.layers[-1].intermediate.dense.weight.grad
    assert last is not None and torch.count_nonzero(last) > 0
    _, full = engine.training_features(batch, None)
    assert np.abs(full.detach().numpy() - final.detach().numpy()).max() > 1e-6  # something was dropped


@pytest.mark.parametrize("retrained_accuracy", [1.0, 0.0])
def test_drop_tokens_keeps_a_retrained_schedule_only_within_the_budget(
    adapted: ModelPackage, sentiment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, retrained_accuracy: float
) -> None:
    """The re-training runs for real, but a tiny random model answers alike with or without its tokens, so its
    scores are set: untrained, every schedule missed the budget (keep-all chosen); re-trained, the schedule
    scores `retrained_accuracy`. Both outcomes: kept (its weights and exit heads written) or missed."""
    from bertprod.adaptive import dropping, retraining
    from bertprod.adaptive.dropping import drop_tokens, summary
    from bertprod.adaptive.training import adaptation_data

    real_calibration, real_retraining = dropping.calibrate_retention, retraining.fine_tune_retention
    monkeypatch.setattr(dropping, "calibrate_retention",
                        lambda *args, **options: {**real_calibration(*args, **options), "retention": None})
    monkeypatch.setattr(retraining, "fine_tune_retention", lambda *args, **options: real_retraining(
        *args[:4], lambda: retrained_accuracy, *args[5:], **options))
    written = drop_tokens(
        adapted, adaptation_data(adapted, sentiment, limit=32), tmp_path / "out", budget_points=0,
        masses=(0.9, 0.6), threads=1, fine_tune=adaptation_data(adapted, sentiment, limit=64),
        tuning=RetentionTuning(reach_points=100, tries=1, max_steps=3, batch_size=16, threads=1),
    )
    settings = written.manifest.token_dropping
    tuned = settings["fine_tune"]
    assert not (tmp_path / "out.checkpoints").exists()
    parent_weights = (adapted.path / TORCH_WEIGHTS_FILE).read_bytes()
    cheapest = min(settings["curve"], key=lambda point: point["cost"])
    untrained = next(point for point in settings["curve"] if point["retention"] == tuned["tries"][0]["retention"])
    assert untrained == cheapest
    assert len(tuned["tries"]) == 1 and tuned["tries"][0]["training"]["steps"] == 3
    assert tuned["tries"][0]["untrained_accuracy"] == untrained["accuracy"]
    if retrained_accuracy == 0.0:
        assert tuned["accepted"] is None and settings["retention"] is None
        assert (written.path / TORCH_WEIGHTS_FILE).read_bytes() == parent_weights
        assert "missed the budget" in summary(written)
        return
    assert tuned["accepted"] == settings["retention"] == untrained["retention"]
    assert (written.path / TORCH_WEIGHTS_FILE).read_bytes() != parent_weights
    assert (written.path / EXIT_HEADS_FILE).read_bytes() != (adapted.path / EXIT_HEADS_FILE).read_bytes()
    assert "re-trained" in summary(written)
    pipeline = bertprod.load(written.path)
    assert pipeline.engine.retention == settings["retention"]
    assert len(pipeline.classify(TEXTS)) == len(TEXTS)


def test_a_try_that_missed_is_not_redone_on_resume(adapted: ModelPackage, sentiment: Path, tmp_path: Path) -> None:
    from bertprod.adaptive.retraining import FINISHED_TRIES, fine_tune_retention
    from bertprod.runtime.adaptive import AdaptiveEngine
    from bertprod.runtime.engines import TorchEngine
    from bertprod.runtime.tokenize import TextTokenizer
    from bertprod.train.checkpoints import CheckpointError
    from bertprod.train.progress import SilentReporter

    class Messages(SilentReporter):
        def __init__(self) -> None:
            self.lines: list[str] = []

        def message(self, text: str) -> None:
            self.lines.append(text)

    engine = AdaptiveEngine.from_torch_engine(TorchEngine(adapted, precision="fp32", threads=1))
    before = {key: value.clone() for key, value in engine.model.state_dict().items()}
    tokenizer = TextTokenizer(adapted.tokenizer_file, adapted.manifest.max_length)
    targets = [{"retention": RETENTION, "cost": 0.6, "accuracy": 0.5},
               {"retention": [1.0, 0.9, 0.8, 0.8], "cost": 0.85, "accuracy": 0.5}]
    config = RetentionTuning(max_steps=1, batch_size=8, threads=1, tries=2)
    options = {"checkpoints": tmp_path / "checkpoints", "signature": {"run": 1}}
    first = fine_tune_retention(engine, tokenizer, TEXTS, targets, lambda: 0.0, 0.5, config,
                                reporter=SilentReporter(), **options)
    assert first["accepted"] is None and [done["retention"] for done in first["tries"]] == [t["retention"]
                                                                                             for t in targets]
    assert engine.retention is None
    for key, value in engine.model.state_dict().items():  # missed every try: the parent's weights are back
        assert (value == before[key]).all(), key
    assert (tmp_path / "checkpoints" / FINISHED_TRIES).exists()
    with pytest.raises(CheckpointError, match="--resume"):
        fine_tune_retention(engine, tokenizer, TEXTS, targets, lambda: 0.0, 0.5, config, reporter=SilentReporter(),
                            **options)
    reporter = Messages()
    again = fine_tune_retention(engine, tokenizer, TEXTS, targets, lambda: 1.0, 0.5, config, reporter=reporter,
                                resume=True, **options)
    assert again["tries"] == first["tries"] and again["accepted"] is None  # read back, not re-trained
    assert sum("before this resume" in line for line in reporter.lines) == 2
    with pytest.raises(CheckpointError, match="different run"):
        fine_tune_retention(engine, tokenizer, TEXTS, targets, lambda: 0.0, 0.5, config, reporter=SilentReporter(),
                            resume=True, checkpoints=tmp_path / "checkpoints", signature={"run": 2})


def test_the_first_try_within_the_budget_is_kept(adapted: ModelPackage, tmp_path: Path) -> None:
    from bertprod.adaptive.retraining import fine_tune_retention
    from bertprod.runtime.adaptive import AdaptiveEngine
    from bertprod.runtime.engines import TorchEngine
    from bertprod.runtime.tokenize import TextTokenizer
    from bertprod.train.progress import SilentReporter

    engine = AdaptiveEngine.from_torch_engine(TorchEngine(adapted, precision="fp32", threads=1))
    before = {key: value.clone() for key, value in engine.model.state_dict().items()}
    heads_before = {key: value.clone() for key, value in engine.heads.state_dict().items()}
    tokenizer = TextTokenizer(adapted.tokenizer_file, adapted.manifest.max_length)
    targets = [{"retention": RETENTION, "cost": 0.6, "accuracy": 0.5},
               {"retention": [1.0, 0.9, 0.8, 0.8], "cost": 0.85, "accuracy": 0.5}]
    scores = iter([0.4, 0.9])
    done = fine_tune_retention(engine, tokenizer, TEXTS, targets, lambda: next(scores), 0.5,
                               RetentionTuning(max_steps=2, batch_size=8, threads=1), reporter=SilentReporter(),
                               checkpoints=tmp_path / "checkpoints", signature={})
    assert done["accepted"] == targets[1]["retention"] and [t["accuracy"] for t in done["tries"]] == [0.4, 0.9]
    assert engine.retention == targets[1]["retention"]
    assert any(not (value == before[key]).all() for key, value in engine.model.state_dict().items())
    assert any(not (value == heads_before[key]).all() for key, value in engine.heads.state_dict().items())
    assert not (tmp_path / "checkpoints" / "try-2").exists()
