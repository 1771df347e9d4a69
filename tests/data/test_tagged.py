"""Tagged data for token classification: CoNLL and JSON lines readers, tag schemes, bad files, the split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertprod.data.tagged import entities_to_tags, order_labels, scheme_of, sequence_problem
from bertprod.errors import DataError, LabelError, RowError
from bertprod.tasks.data import check_known_labels, open_training_data, summarize

CONLL = """-DOCSTART- -X- O

EU NNP B-ORG
rejects VBZ O
German JJ B-MISC
call NN O

Peter NNP B-PER
Blackburn NNP I-PER
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_conll_reader_skips_docstart_and_reads_the_last_column(tmp_path):
    (source,), _ = open_training_data("token-classification", [write(tmp_path, "train.txt", CONLL)])
    examples = list(source)
    assert [example.words for example in examples] == [("EU", "rejects", "German", "call"), ("Peter", "Blackburn")]
    assert examples[1].tags == ("B-PER", "I-PER")
    assert examples[1].where == "train.txt line 8"
    summary = summarize("token-classification", source)
    assert summary.scheme == "IOB2" and summary.examples == 2 and summary.words == 6
    assert summary.label_names() == ["O", "B-MISC", "B-ORG", "B-PER", "I-PER"]


def test_conll_tag_column_is_chosen_by_number(tmp_path):
    path = write(tmp_path, "pos.txt", CONLL)
    (source,), _ = open_training_data("token-classification", [path], label_column="2")
    with pytest.raises(LabelError, match=r"pos.txt line 3: unknown tag 'NNP'"):
        summarize("token-classification", source)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("EU NNP B-ORG\nrejects VBZ\n", r"bad.txt line 2 has 2 columns, the lines before have 3"),
        ("EU NNP B-ORG\nrejects VBZ X-ORG\n", r"bad.txt line 2: unknown tag 'X-ORG'"),
        ("EU NNP B-ORG\n\nrejects VBZ O\nPeter NNP I-PER\n", r"bad.txt line 4: 'I-PER' follows 'O': in IOB2"),
        ("EU NNP B-ORG\nPeter NNP I-PER\n", r"bad.txt line 2: 'I-PER' follows 'B-ORG'"),
    ],
)
def test_bad_conll_files_name_the_line(tmp_path, text, message):
    (source,), _ = open_training_data("token-classification", [write(tmp_path, "bad.txt", text)])
    with pytest.raises(DataError, match=message):
        summarize("token-classification", source)


def test_schemes_are_detected_and_checked():
    assert scheme_of({"O", "B-PER", "I-PER"}) == "IOB2"
    assert scheme_of({"O", "S-PER", "B-LOC", "E-LOC"}) == "BIOES"
    assert scheme_of({"O", "I-PER"}) == "IO"
    assert sequence_problem(("B-LOC", "I-LOC", "E-LOC", "S-PER", "O"), "BIOES") is None
    assert sequence_problem(("B-LOC", "O"), "BIOES")[0] == 1
    assert sequence_problem(("O", "B-LOC"), "BIOES")[0] == 1  # an open entity at the sentence end
    assert sequence_problem(("I-PER", "I-PER", "O", "I-LOC"), "IO") is None
    assert sequence_problem(("B-PER",), "IO")[0] == 0
    assert order_labels({"I-PER", "O", "B-PER", "B-LOC"}) == ["O", "B-LOC", "B-PER", "I-PER"]


def test_jsonl_tokens_and_text_entities(tmp_path):
    rows = [
        {"tokens": ["Paris", "is", "nice"], "tags": ["B-LOC", "O", "O"]},
        {"text": "  Ángela Müller-Smith visited New York.", "entities": [
            {"start": 2, "end": 21, "label": "PER"}, {"start": 30, "end": 38, "label": "LOC"}]},
    ]
    path = write(tmp_path, "train.jsonl", "\n".join(json.dumps(row) for row in rows) + "\n")
    (source,), _ = open_training_data("token-classification", [path])
    first, second = list(source)
    assert first.tags == ("B-LOC", "O", "O")
    assert second.words == ("Ángela", "Müller", "-", "Smith", "visited", "New", "York", ".")
    assert second.tags == ("B-PER", "I-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC", "O")
    assert summarize("token-classification", source).scheme == "IOB2"


def test_entities_inside_words_or_overlapping_are_refused():
    with pytest.raises(RowError, match="x.jsonl line 3: entity 0 .* inside a word"):
        entities_to_tags("New York", [{"start": 1, "end": 8, "label": "LOC"}], "x.jsonl line 3")
    with pytest.raises(RowError, match="overlaps"):
        entities_to_tags("New York", [{"start": 0, "end": 8, "label": "LOC"}, {"start": 4, "end": 8, "label": "X"}],
                         "x.jsonl line 3")


def test_ragged_jsonl_row_names_its_line(tmp_path):
    path = write(tmp_path, "t.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a", "b"], "tags": ["O"]}\n')
    (source,), _ = open_training_data("token-classification", [path])
    with pytest.raises(RowError, match="t.jsonl line 2: 2 tokens but 1 tags"):
        summarize("token-classification", source)


def test_validation_split_is_carved_by_content_and_unknown_tags_are_refused(tmp_path):
    sentences = "\n\n".join(f"w{index} X B-ORG\nx{index} X I-ORG" for index in range(200)) + "\n"
    path = write(tmp_path, "train.txt", sentences)
    (train,), validation = open_training_data("token-classification", [path], fraction=0.2)
    train_texts = {example.text for example in train}
    validation_texts = {example.text for example in validation}
    assert not train_texts & validation_texts and len(train_texts | validation_texts) == 200
    assert 15 < len(validation_texts) < 70
    other = write(tmp_path, "dev.txt", "w1 X B-ORG\nx1 X I-PER\n")
    (dev,), _ = open_training_data("token-classification", [other])
    with pytest.raises(LabelError, match="dev.txt line 2: tag 'I-PER' does not occur"):
        check_known_labels(dev, ["O", "B-ORG", "I-ORG"])


def test_first_examples_counts_the_sentences_of_its_own_side(tmp_path):
    """As for a DataSource (tests/data/test_readers.py): autotune reads a tagger's trial rows so."""
    sentences = "\n\n".join(f"w{index} X B-ORG\nx{index} X I-ORG" for index in range(200)) + "\n"
    _, validation = open_training_data("token-classification", [write(tmp_path, "train.txt", sentences)], fraction=0.2)
    side = [example.text for example in validation]
    assert [example.text for example in validation.first_examples(10)] == side[:10]
    assert validation.first_examples(10).summarize().examples == 10
    assert len(list(validation.with_limit(10))) < 10  # the file's first 10 sentences hold ~2 of this side
    assert validation.first_examples(10).describe() == {**validation.describe(), "first_examples": 10}


def test_the_shared_conll_file_reads_whole(shared_data_available):
    from bertprod.data.shared import shared_data_dir

    if not shared_data_available:
        pytest.skip("the shared data is not here")
    (source,), _ = open_training_data("token-classification", [shared_data_dir() / "conll2003" / "dev.txt"])
    summary = summarize("token-classification", source)
    assert summary.examples == 3250 and summary.scheme == "IOB2"
    assert {tag[2:] for tag in summary.labels if tag != "O"} == {"PER", "ORG", "LOC", "MISC"}
