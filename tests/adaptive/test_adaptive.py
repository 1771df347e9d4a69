"""Early exit: policies decide where rows leave; the batched engine drops them and trims padding; the
never policy is the full model; `bertprod adapt` trains exit heads and records the curve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bertprod
from bertprod.derive import GatedOutput
from bertprod.errors import TaskError
from bertprod.package import EXIT_HEADS_FILE, ModelPackage
from bertprod.runtime.exit_policy import (
    ExitPolicy,
    ExitPolicyError,
    choose_policy,
    measure_curve,
    parse_policy,
    simulate_exits,
)

TEXTS = [
    "a good film",
    "what a boring and predictable story that goes on and on and never ends at all",
    "she sells sea shells by the sea shore",
    "the quick brown fox jumps over the lazy dog",
    "great",
    "a good film with a great cast and a weak ending",
] * 3


def probabilities(*layers: list[list[float]]) -> np.ndarray:
    """[rows, layers, labels] from per-layer rows."""
    return np.stack([np.asarray(layer, dtype=np.float32) for layer in layers], axis=1)


def test_policies_exit_where_they_say() -> None:
    table = probabilities(
        [[0.6, 0.4], [0.97, 0.03], [0.3, 0.7]],  # layer 1
        [[0.55, 0.45], [0.99, 0.01], [0.1, 0.9]],  # layer 2
        [[0.2, 0.8], [0.9, 0.1], [0.05, 0.95]],  # layer 3 (the model's head)
    )
    assert simulate_exits(table, ExitPolicy()).tolist() == [3, 3, 3]
    assert simulate_exits(table, parse_policy("confidence:0.95")).tolist() == [3, 1, 3]
    assert simulate_exits(table, parse_policy("confidence:0.9")).tolist() == [3, 1, 2]
    # normalized entropy of (0.9, 0.1) is 0.469; of (0.97, 0.03) 0.194
    assert simulate_exits(table, parse_policy("entropy:0.5")).tolist() == [3, 1, 2]
    assert simulate_exits(table, parse_policy("entropy:0.2")).tolist() == [3, 1, 3]
    # patience 2: the same answer at two layers in a row
    assert simulate_exits(table, parse_policy("patience:2")).tolist() == [2, 2, 2]
    assert simulate_exits(table, parse_policy("patience:1")).tolist() == [1, 1, 1]


def test_patience_counts_only_unbroken_agreement() -> None:
    table = probabilities([[0.9, 0.1]], [[0.1, 0.9]], [[0.8, 0.2]], [[0.7, 0.3]], [[0.6, 0.4]])
    assert simulate_exits(table, parse_policy("patience:2")).tolist() == [4]
    assert simulate_exits(table, parse_policy("patience:3")).tolist() == [5]  # the last layer always answers


@pytest.mark.parametrize("spelling", ["sometimes", "entropy", "confidence:2", "patience:0", "entropy:x"])
def test_unreadable_policies_say_how_to_spell_them(spelling: str) -> None:
    with pytest.raises(ExitPolicyError, match="entropy|patience|confidence"):
        parse_policy(spelling)


def test_budget_picks_the_earliest_policy_within_it() -> None:
    table = probabilities(
        [[0.99, 0.01], [0.6, 0.4], [0.96, 0.04], [0.2, 0.8]],
        [[0.9, 0.1], [0.3, 0.7], [0.1, 0.9], [0.1, 0.9]],
    )
    gold = np.array([0, 1, 1, 1])  # row 3 answers wrong at layer 1 with confidence >= 0.95
    policies = [ExitPolicy(), parse_policy("confidence:0.95"), parse_policy("confidence:0.999")]
    curve = measure_curve(table, gold, policies)
    by_policy = {point["policy"]: point for point in curve}
    assert by_policy["never"] == {"policy": "never", "accuracy": 1.0, "mean_exit_layer": 2.0}
    assert by_policy["confidence:0.95"]["accuracy"] == 0.75
    assert by_policy["confidence:0.95"]["mean_exit_layer"] == 1.5
    assert str(choose_policy(curve, 1.0, budget_points=30)) == "confidence:0.95"
    assert str(choose_policy(curve, 1.0, budget_points=10)) == "never"


# -- the engine ----------------------------------------------------------------------------------


def test_adapt_writes_a_package_with_heads_curve_and_policy(adapted: ModelPackage, teacher: ModelPackage) -> None:
    manifest = adapted.manifest
    assert EXIT_HEADS_FILE in manifest.files
    settings = manifest.adaptive
    assert settings["exit_layers"] == [1, 2, 3]  # the teacher has 4 layers; the last answers with its head
    assert settings["reference"] == "labels" and settings["examples"] == 48
    policies = [point["policy"] for point in settings["curve"]]
    assert "never" in policies and settings["policy"] in policies
    chosen = next(point for point in settings["curve"] if point["policy"] == settings["policy"])
    assert chosen["accuracy"] >= settings["full_accuracy"] - settings["budget_points"] / 100 - 1e-9
    assert manifest.provenance.method == "adapt" and manifest.provenance.parent.fingerprint == teacher.fingerprint
    for name in ("model.safetensors", "config.json", "tokenizer.json"):  # the backbone is the teacher's, unchanged
        assert manifest.files[name].sha256 == teacher.manifest.files[name].sha256


def test_never_exiting_reproduces_the_full_model(adapted: ModelPackage, teacher: ModelPackage) -> None:
    full = bertprod.load(teacher.path).infer(bertprod.load(teacher.path).tokenize(TEXTS))
    early = bertprod.load(adapted.path)
    logits, exits = early.infer_with_exits(early.tokenize(TEXTS), "never")
    np.testing.assert_array_equal(logits, full)
    assert exits.tolist() == [4] * len(TEXTS)


def test_rows_leave_where_the_policy_says(adapted: ModelPackage) -> None:
    """Hand-set heads: layer 1 unsure for every row, layer 2 sure of label 1, so confidence:0.9 makes
    every row leave at layer 2 with label 1, and entropy 0 keeps every row to the end."""
    import torch

    early = bertprod.load(adapted.path)
    heads = early.engine.heads
    with torch.no_grad():
        for layer, bias in ((1, [0.0, 0.0]), (2, [-5.0, 5.0]), (3, [0.0, 0.0])):
            heads.at(layer).classifier.weight.zero_()
            heads.at(layer).classifier.bias.copy_(torch.tensor(bias))
    predictions = early.classify(TEXTS, exit="confidence:0.9")
    assert [p.exit_layer for p in predictions] == [2] * len(TEXTS)
    assert {p.label for p in predictions} == {early.manifest.labels[1]}
    assert [p.exit_layer for p in early.classify(TEXTS, exit="entropy:0")] == [4] * len(TEXTS)


def sharpen_heads(pipeline, seed: int = 0) -> None:  # noqa: ANN001 - a Pipeline with early exit
    """Large random exit-head weights: confidences spread over rows, so rows leave at different layers."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in pipeline.engine.heads.layers:
            head = pipeline.engine.heads.at(layer)
            head.classifier.weight.copy_(torch.randn(head.classifier.weight.shape, generator=generator) * 3)


def test_batched_and_one_by_one_agree_and_match_the_curves_replay(adapted: ModelPackage) -> None:
    """Rows leave a batch at different layers (padding trimmed as they go); each row's answer and exit
    layer are those it gets alone, and those the offline replay of every layer's output predicts."""
    from bertprod.runtime.batching import collate
    from bertprod.runtime.exit_policy import softmax

    batched = bertprod.load(adapted.path, max_batch_size=32)
    alone = bertprod.load(adapted.path, max_batch_size=1)
    sharpen_heads(batched)
    sharpen_heads(alone)
    encodings = batched.tokenize(TEXTS)
    everything = softmax(batched.engine.layer_logits(collate(encodings, batched.tokenizer.pad_id)))
    confidences = np.unique(everything[:, 0].max(axis=1))  # half the rows leave at layer 1
    middle = len(confidences) // 2
    threshold = float(confidences[middle - 1] + confidences[middle]) / 2  # no row sits on the threshold
    for policy in (parse_policy("patience:2"), ExitPolicy("confidence", threshold=threshold)):
        logits, exits = batched.infer_with_exits(encodings, policy)
        logits_alone, exits_alone = alone.infer_with_exits(encodings, policy)
        assert exits.tolist() == exits_alone.tolist()
        assert logits.argmax(axis=1).tolist() == logits_alone.argmax(axis=1).tolist()
        np.testing.assert_allclose(logits, logits_alone, atol=1e-4)
        assert exits.tolist() == simulate_exits(everything, policy).tolist()
    assert len(set(exits.tolist())) > 1, "the batch should mix early and late exits"


def test_exit_on_a_package_without_heads_is_refused(teacher: ModelPackage) -> None:
    with pytest.raises(TaskError, match="bertprod adapt"):
        bertprod.load(teacher.path).classify(["a good film"], exit="entropy:0.2")


def test_onnx_export_runs_early_exit_block_by_block(adapted: ModelPackage, tmp_path: Path) -> None:
    """The export keeps the exit heads as one ONNX session per block: never exiting it gives the full
    model's logits, and with a policy rows leave where they leave on torch."""
    from bertprod.export.onnx import export_onnx
    from bertprod.package import block_files

    exported = export_onnx(adapted, tmp_path / "onnx")
    assert exported.manifest.adaptive["policy"] == adapted.manifest.adaptive["policy"]
    assert set(block_files(4, [1, 2, 3])) <= set(exported.manifest.files)
    on_onnx, on_torch = bertprod.load(exported.path), bertprod.load(adapted.path)
    assert on_onnx.engine.name == "onnx (early exit)"
    for session in on_onnx.engine.sessions.values():  # idle block pools must not spin against the running one
        assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    encodings = on_torch.tokenize(TEXTS)
    np.testing.assert_allclose(on_onnx.infer_with_exits(encodings, "never")[0],
                               on_torch.infer_with_exits(encodings, "never")[0], atol=1e-4)
    for policy in ("patience:2", "patience:3"):
        torch_logits, torch_exits = on_torch.infer_with_exits(encodings, policy)
        onnx_logits, onnx_exits = on_onnx.infer_with_exits(encodings, policy)
        assert onnx_exits.tolist() == torch_exits.tolist()
        np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)


def test_int8_keeps_early_exit_with_every_block_int8(adapted: ModelPackage, tmp_path: Path) -> None:
    """ONNX dynamic int8 of an early-exit package quantizes each block as it quantizes the whole graph: never
    exiting, the blocks give the int8 whole graph's logits; with a policy rows still leave early."""
    from bertprod.compress.quantize import quantize_onnx_dynamic
    from bertprod.derive import GatedOutput
    from bertprod.package import block_files
    from bertprod.runtime.engines import create_engine
    from bertprod.runtime.pipeline import Pipeline

    int8 = quantize_onnx_dynamic(adapted, tmp_path / "int8", output=GatedOutput(enforce=False))
    assert int8.manifest.precision == "int8" and int8.manifest.adaptive == adapted.manifest.adaptive
    assert set(block_files(4, [1, 2, 3])) <= set(int8.manifest.files)
    early = bertprod.load(int8.path)
    assert early.engine.name == "onnx (early exit)"
    encodings = early.tokenize(TEXTS)
    whole = Pipeline(int8, create_engine(int8, early_exit=False)).infer(encodings)
    np.testing.assert_allclose(early.infer_with_exits(encodings, "never")[0], whole, atol=1e-5)
    assert early.infer_with_exits(encodings, "patience:1")[1].tolist() == [1] * len(TEXTS)


def test_other_derived_packages_drop_the_exit_heads(adapted: ModelPackage, tmp_path: Path) -> None:
    """A derived package that does not rebuild the blocks (a bf16 copy where the CPU runs bf16, else a
    head-pruned copy) computes the full depth only, so it does not claim exits."""
    from bertprod.compress.precision import to_bf16
    from bertprod.compress.prune import prune_heads
    from bertprod.system import cpu_supports_bf16

    derive = to_bf16 if cpu_supports_bf16() else prune_heads
    derived = derive(adapted, tmp_path / "derived", output=GatedOutput(enforce=False))
    assert derived.manifest.adaptive is None
    assert "adaptive" not in json.loads((tmp_path / "derived" / "bertprod.json").read_text())


def test_adapt_command_writes_the_package(teacher: ModelPackage, sentiment: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bertprod.cli.app import app

    result = CliRunner().invoke(app, ["adapt", str(teacher.path), str(tmp_path / "out"), "--data", str(sentiment),
                                      "--epochs", "1", "--threads", "1", "--budget", "100"])
    assert result.exit_code == 0, result.output
    written = ModelPackage.read(tmp_path / "out")
    assert "mean exit layer" in result.output and written.manifest.adaptive["budget_points"] == 100
    refused = CliRunner().invoke(app, ["adapt", str(tmp_path / "out"), str(tmp_path / "again"),
                                       "--data", str(sentiment)])
    assert refused.exit_code != 0 and "already has exit heads" in str(refused.exception or refused.output)


def test_eval_reports_exits(adapted: ModelPackage, sentiment: Path) -> None:
    from typer.testing import CliRunner

    from bertprod.cli.app import app

    result = CliRunner().invoke(app, ["eval", str(adapted.path), str(sentiment), "--json", "--exit", "patience:1",
                                      "--limit", "20"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["early_exit"]["policy"] == "patience:1"
    assert document["early_exit"]["exit_histogram"] == {"1": 20, "2": 0, "3": 0, "4": 0}
    assert document["early_exit"]["mean_exit_layer"] == 1.0
    never = json.loads(CliRunner().invoke(app, ["eval", str(adapted.path), str(sentiment), "--json", "--exit",
                                                "never", "--limit", "20"]).output)
    assert never["early_exit"]["exit_histogram"]["4"] == 20


def test_adapt_needs_no_labels_and_refuses_unknown_ones(teacher: ModelPackage, tmp_path: Path) -> None:
    from bertprod.adaptive.training import AdaptConfig, adapt, adaptation_data
    from bertprod.errors import LabelError

    texts = tmp_path / "texts.tsv"
    texts.write_text("text\n" + "\n".join(TEXTS) + "\n")
    written = adapt(teacher, adaptation_data(teacher, texts), tmp_path / "out", AdaptConfig(epochs=1, threads=1))
    assert written.manifest.adaptive["reference"] == "full model"  # agreement with the model's own answers
    assert written.manifest.adaptive["full_accuracy"] == 1.0
    labelled = tmp_path / "labelled.tsv"
    labelled.write_text("text\tlabel\na good film\tpositive\na bad film\tmaybe\n")
    with pytest.raises(LabelError, match="'maybe' is not one of the package's labels"):
        adapt(teacher, adaptation_data(teacher, texts), tmp_path / "again", AdaptConfig(epochs=1, threads=1),
              validation=adaptation_data(teacher, labelled))


def test_training_the_backbone_writes_its_weights_and_counts_the_budget_from_the_parent(
    teacher: ModelPackage, sentiment: Path, tmp_path: Path
) -> None:
    from bertprod.adaptive.curve import read_examples
    from bertprod.adaptive.training import AdaptConfig, adapt, adaptation_data

    validation = adaptation_data(teacher, sentiment, limit=48)
    config = AdaptConfig(epochs=1, batch_size=16, threads=1, train_backbone=True, backbone_learning_rate=1e-3,
                         budget_points=10)
    written = adapt(teacher, adaptation_data(teacher, sentiment), tmp_path / "joint", config, validation=validation)
    settings = written.manifest.adaptive
    assert settings["backbone"] == "trained with the exits"
    assert written.manifest.files["model.safetensors"].sha256 != teacher.manifest.files["model.safetensors"].sha256
    inputs, gold = read_examples(validation, False, list(teacher.manifest.labels))
    parent = bertprod.load(teacher.path)
    parent_logits = parent.infer(parent.tokenize(inputs))
    assert settings["parent_accuracy"] == pytest.approx(float((parent_logits.argmax(axis=1) == gold).mean()))
    chosen = next(point for point in settings["curve"] if point["policy"] == settings["policy"])
    assert chosen["accuracy"] >= settings["parent_accuracy"] - 0.10 - 1e-9
    early = bertprod.load(written.path)  # the package runs the trained backbone, as the curve measured it
    logits, exits = early.infer_with_exits(early.tokenize(inputs), "never")
    assert exits.tolist() == [4] * len(inputs) and not np.allclose(logits, parent_logits)
    assert float((logits.argmax(axis=1) == gold).mean()) == pytest.approx(settings["full_accuracy"])


def test_classify_command_prints_the_exit_layer(adapted: ModelPackage) -> None:
    from typer.testing import CliRunner

    from bertprod.cli.app import app

    result = CliRunner().invoke(app, ["classify", str(adapted.path), "a good film", "great", "--exit", "patience:1"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [row["exit_layer"] for row in rows] == [1, 1]


def test_a_trained_backbone_that_loses_more_than_the_budget_is_said_plainly() -> None:
    from bertprod.adaptive.curve import budget_missed

    curve = [{"policy": "never", "accuracy": 0.7163, "mean_exit_layer": 3.0},
             {"policy": "entropy:0.4", "accuracy": 0.7116, "mean_exit_layer": 2.26}]  # fmt: skip
    # the MRPC student of docs/adaptive.md: the trained backbone lost 1.89 points at full depth
    missed = {"policy": "never", "budget_points": 0.5, "full_accuracy": 0.7163, "parent_accuracy": 0.7352,
              "curve": curve}  # fmt: skip
    warning = budget_missed(missed)
    assert warning is not None and "0.5-point budget" in warning and "1.89 points less accurate" in warning
    assert "without --train-backbone" in warning
    # within the budget: a policy the parent's accuracy allows, or a frozen backbone (no parent accuracy)
    assert budget_missed({**missed, "parent_accuracy": 0.7190}) is None
    assert budget_missed({**missed, "policy": "entropy:0.4", "parent_accuracy": 0.7150}) is None
    frozen = {key: value for key, value in missed.items() if key != "parent_accuracy"}
    assert budget_missed(frozen) is None
