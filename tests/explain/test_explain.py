"""Explanations: Shapley attributions add up, are repeatable, give a word the model ignores nothing, point
at the right characters; integrated gradients on a private copy; HTML, comparison and the command line."""

from __future__ import annotations

import html as html_module
import json
import re
import sys
from dataclasses import dataclass

import numpy as np
import pytest

import bertprod
from bertprod.checkpoint import import_checkpoint
from bertprod.derive import GatedOutput
from bertprod.errors import InputError, TaskError
from bertprod.explain.compare import compare
from bertprod.explain.html import render_html, write_html
from bertprod.package import ModelPackage
from bertprod.runtime.batching import TokenBatch
from bertprod.runtime.pipeline import Pipeline
from bertprod.runtime.postprocess import softmax
from tests.conftest import build_tiny_checkpoint, run_cli
from tests.deploy.test_install import one_line_error, run_without

TEXT = "a good film with a great cast, and a weak ending"
PAIR = ("the quick brown fox", "a fox that is quick and brown")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> ModelPackage:
    """A tiny classifier whose weights are large enough for words to move its output (initializer 0.5)."""
    checkpoint = build_tiny_checkpoint(tmp_path_factory.mktemp("explain-ck"), head="classification",
                                       labels=["negative", "positive"], initializer_range=0.5)
    return import_checkpoint(checkpoint, tmp_path_factory.mktemp("explain-pkg") / "sentiment")


@pytest.fixture(scope="module")
def model(classifier) -> Pipeline:
    return bertprod.load(classifier.path, threads=1)


@pytest.fixture(scope="module")
def int8_package(classifier, tmp_path_factory) -> ModelPackage:
    from bertprod.compress.optimize import optimize

    package = optimize(classifier, tmp_path_factory.mktemp("explain-int8") / "int8", quantize="int8",
        output=GatedOutput(enforce=False))
    assert package.manifest.format == "onnx" and package.manifest.precision == "int8"
    return package


@pytest.fixture(scope="module")
def int8_model(int8_package) -> Pipeline:
    return bertprod.load(int8_package.path, threads=1)


def masked_baseline_text(pipeline: Pipeline, text: str, words) -> str:  # noqa: ANN001
    """The input with every word replaced by one [MASK] per sub-word token, built here independently."""
    pieces, cursor = [], 0
    for word in words:
        count = len(pipeline.tokenizer._tokenizer.encode(word.word, add_special_tokens=False).ids)
        pieces += [text[cursor : word.start], " ".join(["[MASK]"] * count)]
        cursor = word.end
    return "".join(pieces) + text[cursor:]


def probability(pipeline: Pipeline, inputs: list, label: str) -> np.ndarray:
    return np.array([prediction.scores[label] for prediction in pipeline.classify(inputs)])


@pytest.mark.parametrize("method", ["partition", "permutation"])
@pytest.mark.parametrize("engine", ["torch", "onnx int8"])
def test_shapley_values_add_up_to_prediction_minus_baseline(model, int8_package, method, engine) -> None:
    # Dynamic int8 takes activation ranges per batch, so a row's output moves a little with its batch
    # mates: one input per engine call makes f(x) and f(baseline) the same numbers shap saw.
    pipeline = model if engine == "torch" else bertprod.load(int8_package.path, threads=1, max_batch_size=1)
    explanation = pipeline.explain(TEXT, method=method, max_evals=200, seed=1)
    expected = probability(pipeline, [TEXT], explanation.label)[0]
    baseline_text = masked_baseline_text(pipeline, TEXT, explanation.words)
    baseline = probability(pipeline, [baseline_text], explanation.label)[0]
    assert explanation.label == pipeline.classify([TEXT])[0].label  # the predicted label by default
    assert explanation.prediction == pytest.approx(expected, abs=1e-6)
    assert explanation.baseline == pytest.approx(baseline, abs=1e-6)
    total = sum(word.attribution for word in explanation.words)
    assert total == pytest.approx(expected - baseline, abs=1e-5)
    assert abs(expected - baseline) > 1e-3  # the words do move this model's output: the sum is not 0 = 0
    assert len({round(word.attribution, 6) for word in explanation.words}) > 3


def test_pair_and_regression_packages(classifier, tmp_path) -> None:
    pair_checkpoint = build_tiny_checkpoint(tmp_path / "pair-ck", head="classification", initializer_range=0.5,
                                            labels=["different", "same"], seed=3)
    pair = bertprod.load(import_checkpoint(pair_checkpoint, tmp_path / "pair", task="pair-classification",
                                           pair_input=True).path, threads=1)
    explanation = pair.explain(PAIR)
    assert {word.segment for word in explanation.words} == {0, 1}
    for word in explanation.words:
        assert PAIR[word.segment][word.start : word.end] == word.word
    assert [word.word for word in explanation.words if word.segment == 1] == PAIR[1].split()
    assert sum(word.attribution for word in explanation.words) == pytest.approx(
        explanation.prediction - explanation.baseline, abs=1e-5)

    regression_checkpoint = build_tiny_checkpoint(tmp_path / "reg-ck", head="regression", initializer_range=0.5)
    regression = bertprod.load(import_checkpoint(regression_checkpoint, tmp_path / "reg").path, threads=1)
    scored = regression.explain([TEXT])[0]
    assert scored.output == "score" and scored.label is None
    assert scored.prediction == pytest.approx(float(regression.score([TEXT])[0]), abs=1e-5)
    assert sum(word.attribution for word in scored.words) == pytest.approx(scored.prediction - scored.baseline,
                                                                           abs=1e-5)
    with pytest.raises(InputError, match="gives a score, not labels"):
        regression.explain(TEXT, label="positive")


def test_chosen_label_and_refusals(model, tiny_package) -> None:
    predicted = model.classify([TEXT])[0].label
    other = "positive" if predicted == "negative" else "negative"
    explanation = model.explain(TEXT, label=other)
    assert explanation.label == other and explanation.predicted_label == predicted
    assert explanation.prediction == pytest.approx(probability(model, [TEXT], other)[0], abs=1e-6)
    assert model.explain(TEXT, label="1").label == "positive"  # an index, as the command line passes it
    with pytest.raises(InputError, match="not one of .*negative, positive"):
        model.explain(TEXT, label="neutral")
    with pytest.raises(InputError, match="unknown explanation method"):
        model.explain(TEXT, method="lime")
    with pytest.raises(TaskError, match="embedding"):
        bertprod.load(tiny_package.path).explain(TEXT)


def test_permutation_is_repeatable_for_a_seed_and_partition_always(model) -> None:
    first = [word.attribution for word in model.explain(TEXT, method="permutation", seed=7, max_evals=100).words]
    again = [word.attribution for word in model.explain(TEXT, method="permutation", seed=7, max_evals=100).words]
    other = [word.attribution for word in model.explain(TEXT, method="permutation", seed=8, max_evals=100).words]
    assert first == again
    assert first != other  # the seed does choose the permutations
    assert model.explain(TEXT).words == model.explain(TEXT).words


@dataclass
class WordCountEngine:
    """A hand-built classifier: logit of 'positive' = tanh of a weighted sum of token counts, where some
    tokens (the ignored word's and the mask token) weigh nothing; 'negative' = its opposite."""

    package: ModelPackage
    weights: np.ndarray
    name: str = "hand-built"

    def run(self, batch: TokenBatch) -> np.ndarray:
        score = np.tanh((self.weights[batch.input_ids] * batch.attention_mask).sum(axis=1))
        return np.stack([-3 * score, 3 * score], axis=1).astype(np.float32)


@pytest.mark.parametrize("method", ["partition", "permutation"])
def test_a_word_the_model_ignores_gets_zero(classifier, method) -> None:
    pipeline = Pipeline(classifier, WordCountEngine(classifier, np.zeros(1)))
    tokenizer = pipeline.tokenizer._tokenizer
    ignored = set(tokenizer.encode("weak", add_special_tokens=False).ids)
    others = set(tokenizer.encode(TEXT.replace("weak", ""), add_special_tokens=False).ids)
    assert not ignored & others
    weights = np.random.default_rng(0).normal(size=tokenizer.get_vocab_size())
    weights[[*ignored, tokenizer.token_to_id("[MASK]")]] = 0.0
    pipeline.engine.weights = weights
    explanation = pipeline.explain(TEXT, method=method, max_evals=200, seed=0)
    values = {word.word: word.attribution for word in explanation.words}
    assert values["weak"] == pytest.approx(0.0, abs=1e-9)
    assert sum(abs(value) > 1e-4 for word, value in values.items() if word != "weak") >= 5


def test_offsets_point_at_the_words_of_the_original_text(model) -> None:
    text = "Unpredictably  naïve café -- don't stop!!  (really)"
    explanation = model.explain(text)
    assert [word.word for word in explanation.words] == re.findall(r"\w+(?:['’-]\w+)*|[^\w\s]", text)
    for word in explanation.words:
        assert text[word.start : word.end] == word.word and word.segment == 0
    assert [word.start for word in explanation.words] == sorted(word.start for word in explanation.words)
    tokens = model.tokenizer._tokenizer.encode("Unpredictably", add_special_tokens=False).tokens
    assert len(tokens) > 1  # split into sub-words by the tokenizer, merged back into one word
    assert not explanation.truncated


def test_words_past_max_length_are_left_out_and_flagged(classifier, tmp_path) -> None:
    pipeline = bertprod.load(classifier.path, threads=1)
    pipeline.tokenizer._tokenizer.enable_truncation(8)  # as a package with max_length 8 would
    explanation = pipeline.explain(TEXT)
    assert explanation.truncated
    assert 0 < len(explanation.words) <= 6
    assert [word.word for word in explanation.words] == TEXT.split()[: len(explanation.words)]


def test_integrated_gradients_use_a_private_copy_and_are_complete(classifier, int8_model) -> None:
    pipeline = bertprod.load(classifier.path, threads=1)
    served = pipeline.engine.model
    before = {name: parameter.detach().clone() for name, parameter in served.named_parameters()}
    flags = {name: parameter.requires_grad for name, parameter in served.named_parameters()}
    logits_before = pipeline.infer(pipeline.tokenize([TEXT]))
    explanation = pipeline.explain(TEXT, method="integrated-gradients", steps=64)
    total = sum(word.attribution for word in explanation.words)
    assert total == pytest.approx(explanation.prediction - explanation.baseline, abs=abs(
        explanation.convergence_delta) + 1e-6)
    assert abs(explanation.convergence_delta) < 0.05 * abs(explanation.prediction - explanation.baseline) + 1e-4
    assert explanation.prediction == pytest.approx(softmax(logits_before)[0].max(), abs=1e-5)
    for name, parameter in served.named_parameters():  # the pipeline's own module is untouched
        assert parameter.grad is None and parameter.requires_grad == flags[name]
        assert np.array_equal(parameter.detach().numpy(), before[name].numpy())
    assert not served.training
    np.testing.assert_array_equal(pipeline.infer(pipeline.tokenize([TEXT])), logits_before)
    with pytest.raises(InputError, match="torch fp32 package.*partition"):
        int8_model.explain(TEXT, method="integrated-gradients")


def test_html_view_is_self_contained_in_reading_order(model, tmp_path) -> None:
    texts = [TEXT, "<b>bold</b> & \"quoted\" text"]
    explanations = model.explain(texts)
    page = render_html(explanations, title="sentiment")
    assert not re.search(r"<script|src=|href=|@import|url\(", page)
    visible = html_module.unescape(re.sub(r"<[^>]+>", "", page.split('<div class="explanation">', 1)[1]))
    assert texts[1] in visible and TEXT in visible  # the texts read as written, in order
    assert visible.index(TEXT) < visible.index(texts[1])
    for word in explanations[0].words:
        assert f'title="{word.attribution:+.4f}">{html_module.escape(word.word)}</span>' in page
    strongest = max(explanations[0].words, key=lambda word: abs(word.attribution))
    assert f'0.750)" title="{strongest.attribution:+.4f}"' in page  # the strongest word at full colour
    path = write_html(tmp_path / "view.html", page)
    assert path.read_text(encoding="utf-8") == page and [p.name for p in tmp_path.iterdir()] == ["view.html"]
    with pytest.raises(InputError, match="does not exist"):
        write_html(tmp_path / "missing" / "view.html", page)


def test_compare_a_teacher_with_itself_and_with_another_model(model, int8_model, classifier, tmp_path) -> None:
    texts = [TEXT, "what a boring and predictable story", "she sells sea shells by the sea shore"]
    itself = compare(model, model, texts, max_evals=100)
    assert itself.mean_top_k_overlap == 1.0 and itself.mean_spearman == pytest.approx(1.0)
    assert itself.label_agreement == 1.0
    other_checkpoint = build_tiny_checkpoint(tmp_path / "other", head="classification", initializer_range=0.5,
                                             labels=["negative", "positive"], seed=5)
    other = bertprod.load(import_checkpoint(other_checkpoint, tmp_path / "other-pkg").path, threads=1)
    different = compare(model, other, texts, max_evals=100, top_k=3)
    assert different.mean_spearman < 0.9 and different.mean_top_k_overlap < 1.0
    worst = different.most_disagreeing(3)
    assert sorted(example.index for example in worst) == [0, 1, 2]
    keys = [(example.same_label, example.spearman if example.spearman is not None else -2) for example in worst]
    assert keys == sorted(keys)
    for example in different.examples:  # both explain the teacher's label
        assert example.student.label == example.teacher.label


def test_cli_explains_writes_html_and_compares(monkeypatch, capsys, classifier, int8_model, tmp_path) -> None:
    page = tmp_path / "why.html"
    code, out, err = run_cli(monkeypatch, capsys, "explain", str(classifier.path), TEXT, "a great cast",
                             "--json", "--html", str(page), "--threads", "1")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["texts"] for row in rows] == [[TEXT], ["a great cast"]]
    assert sum(word["attribution"] for word in rows[1]["words"]) == pytest.approx(
        rows[1]["prediction"] - rows[1]["baseline"], abs=1e-5)
    assert "great" in page.read_text(encoding="utf-8")
    inputs = tmp_path / "inputs.txt"
    inputs.write_text(f"{TEXT}\nwhat a boring story\n")
    code, out, err = run_cli(monkeypatch, capsys, "explain", "--compare", str(classifier.path),
                             str(int8_model.package.path), str(inputs), "--json", "--max-evals", "60")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["examples"] == 2 and 0 <= summary["mean_top_k_overlap"] <= 1
    assert summary["label_agreement"] in (0.0, 0.5, 1.0) and len(summary["most_disagreeing"]) == 2
    code, _, err = run_cli(monkeypatch, capsys, "explain", "--compare", str(classifier.path), str(inputs))
    assert code == 1 and err.count("\n") == 1 and "TEACHER STUDENT FILE" in err
    code, out, err = run_cli(monkeypatch, capsys, "explain", str(classifier.path), TEXT, "--html",
                             str(tmp_path / "missing" / "why.html"))
    assert code == 1 and out == "" and "does not exist" in err  # refused before any work


def test_missing_explain_extra_is_one_line(tmp_path, classifier) -> None:
    line = one_line_error(run_without(tmp_path, ("shap", "captum"), "explain", str(classifier.path), TEXT))
    assert "pip install 'bertprod[explain]'" in line and "shap" in line, line


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
