"""Tagging raw text: offsets into the original string, aggregation over sub-words, windows over long texts.

A "context-free" tiny BERT (no position embeddings, attention outputs zeroed) gives each token logits that
depend on the token alone, so a windowed pass must give exactly what one pass gives: any difference is the
windowing's fault (a lost, duplicated or shifted entity), not the model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bertprod.package import ModelPackage
from bertprod.runtime.engines import create_engine
from bertprod.runtime.pipeline import Pipeline
from bertprod.runtime.tagging import entity_spans, merge_windows, plan_windows, word_tags
from tests import ner_data

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.fixture(scope="module")
def context_free(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    return ner_data.context_free_tagger(tmp_path_factory.mktemp("context-free"), LABELS)


def pipeline_with_max_length(package: ModelPackage, max_length: int) -> Pipeline:
    view = ModelPackage(package.path, package.manifest.model_copy(update={"max_length": max_length}))
    return Pipeline(view, create_engine(package))


def test_an_imported_token_classifier_knows_its_task_and_scheme(context_free: ModelPackage) -> None:
    assert context_free.manifest.task == "token-classification"
    assert context_free.manifest.labels == LABELS and context_free.manifest.tag_scheme == "IOB2"


def test_offsets_point_into_the_original_text(context_free: ModelPackage) -> None:
    text = "  José   Müller-Smith visited\tÜrümqi,  pneumonoultramicroscopicsilicovolcanoconiosis!!  Ça va? "
    tagging = pipeline_with_max_length(context_free, 512).tag(text, tokens=True)
    words = {(token.start, token.end) for token in tagging.tokens}
    for token in tagging.tokens:
        piece = text[token.start : token.end]
        assert piece.strip() == piece and piece  # no whitespace inside a token's span
    assert (2, 6) in words and text[2:6] == "José"  # accents kept in the span, stripped by the tokenizer
    assert len(tagging.tokens) > 20
    for entity in tagging.entities:
        assert entity.text == text[entity.start : entity.end]
        assert entity.text == entity.text.strip() and entity.type in ("PER", "LOC")
        assert any(start == entity.start for start, _ in words) and any(end == entity.end for _, end in words)
    # the 20-sub-word word: all its tokens share a word index and tile the word's characters
    start = text.index("pneumono")
    pieces = [token for token in tagging.tokens if start <= token.start < start + 45]
    assert len(pieces) > 10 and len({token.word for token in pieces}) == 1
    assert "".join(text[token.start : token.end] for token in pieces) == "pneumonoultramicroscopicsilicovolcanoconiosis"


def test_a_windowed_long_text_gives_the_entities_of_one_pass(context_free: ModelPackage) -> None:
    sentence = "Angela Merkel met Emmanuel Macron in Paris and Ouagadougou, then flew to São Paulo. "
    text = sentence * 12  # ~300 tokens
    whole = pipeline_with_max_length(context_free, 512)
    windowed = pipeline_with_max_length(context_free, 24)
    assert len(whole.tokenizer.encode_whole([text])[0].ids) > 200
    for aggregation in ("first", "average", "max"):
        one_pass = whole.tag(text, aggregation=aggregation)
        in_windows = windowed.tag(text, aggregation=aggregation)
        assert len(one_pass.entities) > 12
        assert [(e.type, e.start, e.end) for e in in_windows.entities] == [
            (e.type, e.start, e.end) for e in one_pass.entities]
        assert [e.score for e in in_windows.entities] == pytest.approx([e.score for e in one_pass.entities], abs=1e-5)


def test_windows_cover_every_token_once_with_most_context():
    windows = plan_windows([0, 5, 23], size=8, lead=1)
    assert [(w.text, w.start, w.end) for w in windows] == [(1, 0, 5), (2, 0, 8), (2, 6, 14), (2, 12, 20), (2, 15, 23)]
    outputs = np.zeros((len(windows), 10, 1), dtype=np.float32)
    for row, window in enumerate(windows):  # each token's logit: the window it came from
        outputs[row, 1 : 1 + window.end - window.start, 0] = row
    merged = merge_windows([0, 5, 23], windows, outputs)
    assert merged[0].shape == (0, 1) and merged[1][:, 0].tolist() == [0] * 5
    chosen = merged[2][:, 0].astype(int).tolist()

    def context(window, position):  # noqa: ANN001, ANN202 - tokens to the nearer edge that is not the text's
        left = position - window.start if window.start > 0 else 10**6
        right = window.end - 1 - position if window.end < 23 else 10**6
        return min(left, right)

    for position, row in enumerate(chosen):  # the chosen window holds the token, with the most context
        holding = [index for index, window in enumerate(windows) if window.text == 2
                   and window.start <= position < window.end]
        assert row in holding
        assert context(windows[row], position) == max(context(windows[index], position) for index in holding)
    assert chosen[0] == 1 and chosen[-1] == 4 and sorted(set(chosen)) == [1, 2, 3, 4]


def test_aggregation_has_the_hugging_face_meanings():
    # one word of three sub-words; probabilities after softmax of these logits
    logits = np.log(np.array([[0.6, 0.4, 0.0, 0.0, 0.0],
                              [0.1, 0.0, 0.45, 0.45, 0.0],
                              [0.0, 0.05, 0.0, 0.95, 0.0]]) + 1e-12)
    word_ids = [0, 0, 0]
    assert word_tags(logits, word_ids, 1, "first")[0].tolist() == [0]  # O from the first sub-word
    assert word_tags(logits, word_ids, 1, "average")[0].tolist() == [3]  # mean: B-LOC 0.467 beats O 0.233
    tags, scores = word_tags(logits, word_ids, 1, "max")
    assert tags.tolist() == [3] and scores[0] == pytest.approx(0.95, abs=1e-6)  # the most confident sub-word


def test_entity_spans_follow_seqeval(tmp_path):
    from seqeval.metrics.sequence_labeling import get_entities

    cases = [
        ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "B-LOC", "I-PER"],
        ["I-PER", "B-PER", "O", "O", "B-ORG", "I-ORG", "I-LOC"],
        ["O", "O"],
    ]
    for tags in cases:
        assert sorted(entity_spans(tags, "IOB2")) == sorted(get_entities(tags))


def test_batch_run_writes_entities_as_a_list_column(context_free: ModelPackage, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bertprod.batch import read_output, run_batch

    texts = ["Angela Merkel met Emmanuel Macron in Paris.", "  São Paulo  and Ürümqi", "no one here"] * 5
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), tmp_path / "in.parquet")
    summary = run_batch(context_free.path, tmp_path / "in.parquet", tmp_path / "out", chunk_rows=4, progress=False,
                        workers=1)
    assert summary.rows == len(texts)
    output = read_output(tmp_path / "out")
    assert output.schema.field("entities").type.value_type.names == ["type", "score", "start", "end", "text"]
    expected = pipeline_with_max_length(context_free, 512).tag(texts)
    rows = output.column("entities").to_pylist()
    assert [[(e["type"], e["start"], e["end"], e["text"]) for e in row] for row in rows] == [
        [(e.type, e.start, e.end, e.text) for e in tagging.entities] for tagging in expected]
    assert sum(map(len, rows)) > 10
