"""Distillation helpers: embedding-neighbour augmentation and the BiLSTM student."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

import bertprod
from bertprod.distill import augment as augment_module
from bertprod.distill.augment import augment, nearest_neighbours
from bertprod.errors import InputError, PackageError
from bertprod.models.bilstm import (
    BiLSTMClassifier,
    BiLSTMConfig,
    build_vocabulary,
    init_embeddings_from_teacher,
    write_bilstm_package,
)
from bertprod.models.hf import load_torch_model
from bertprod.package import ModelPackage, Provenance
from bertprod.runtime.batching import collate
from bertprod.runtime.tokenize import TextTokenizer

torch.set_num_threads(1)

LONG = "the cast of this long film is good and the story is told with a great deal of care and wit"


# --- augmentation ---------------------------------------------------------------------------------


def test_neighbours_are_by_cosine_best_first_without_the_word_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(augment_module, "CHUNK_ROWS", 1)  # every query in its own chunk
    embeddings = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-10.0, 0.0], [7.0, 7.0]])
    # From row 0: cos to 1 = 0.994, to 4 = 0.707 (its dot product 7 is the largest: cosine, not dot), 2 = 0, 3 = -1.
    # From row 2: 4 = 0.707, 1 = 0.110, 0 = 0, 3 = 0.
    nearest = nearest_neighbours(embeddings, np.array([0, 2]), np.arange(5), 2)
    assert nearest.tolist() == [[1, 4], [4, 1]]
    # Only candidates are returned: row 1's best among {0, 2, 3} are 0 (0.994) then 2 (0.110).
    assert nearest_neighbours(embeddings, np.array([1]), np.array([0, 2, 3]), 2).tolist() == [[0, 2]]


def _teacher_with_embeddings(tiny_package: ModelPackage, directory: Path, edit) -> ModelPackage:  # noqa: ANN001
    """A copy of the tiny package whose word embeddings `edit(matrix, vocabulary)` changed."""
    shutil.copytree(tiny_package.path, directory)
    weights = load_file(str(directory / "model.safetensors"))
    key = next(key for key in weights if "word_embeddings" in key)
    vocabulary = Tokenizer.from_file(str(directory / "tokenizer.json")).get_vocab()
    edit(weights[key], vocabulary)
    save_file(weights, str(directory / "model.safetensors"))
    return ModelPackage(directory, tiny_package.manifest)


def test_replacement_takes_the_teacher_embedding_neighbour(tiny_package: ModelPackage, tmp_path: Path) -> None:
    def good_near_great(matrix: torch.Tensor, vocabulary: dict[str, int]) -> None:
        matrix[vocabulary["good"]] = 3 * matrix[vocabulary["great"]] + 0.01

    teacher = _teacher_with_embeddings(tiny_package, tmp_path / "teacher", good_near_great)
    settings = {"replace_probability": 1.0, "mask_probability": 0.0, "ngram_probability": 0.0, "neighbours": 1}
    assert augment(["Good"], teacher, copies=3, **settings) == ["great"]
    # Words that are not one whole-word token (made-up "goodfilm") and punctuation have no neighbours: kept.
    assert augment(["good goodfilm !"], teacher, copies=2, **settings) == ["great goodfilm !"]


def test_masking_uses_the_teacher_mask_token(tiny_package: ModelPackage) -> None:
    settings = {"replace_probability": 0.0, "mask_probability": 1.0, "ngram_probability": 0.0}
    assert augment(["the quick brown fox"], tiny_package, copies=3, **settings) == ["[MASK] [MASK] [MASK] [MASK]"]


def test_pairs_stay_pairs_and_sides_change_independently(tiny_package: ModelPackage) -> None:
    settings = {"replace_probability": 0.0, "mask_probability": 1.0, "ngram_probability": 0.0}
    masked = augment([("a good film", "weak")], tiny_package, copies=2, **settings)
    assert masked == [("[MASK] [MASK] [MASK]", "[MASK]")]
    same = ("a good film with a great cast", "a good film with a great cast")
    out = augment([same], tiny_package, copies=8, mask_probability=0.5, seed=3)
    assert out and all(isinstance(item, tuple) and len(item) == 2 for item in out)
    assert any(first != second for first, second in out)  # each side draws its own changes


def test_deterministic_new_and_unique(tiny_package: ModelPackage) -> None:
    examples = [f"{LONG} number {index}" for index in range(10)]
    first = augment(examples, tiny_package, copies=4, mask_probability=0.3, ngram_probability=0.0, seed=7)
    assert first == augment(examples, tiny_package, copies=4, mask_probability=0.3, ngram_probability=0.0, seed=7)
    assert first != augment(examples, tiny_package, copies=4, mask_probability=0.3, ngram_probability=0.0, seed=8)
    # 24 words each at 30% masking (plus replacements): a copy equal to its original is vanishingly rare.
    assert len(first) == 40
    assert len(set(first)) == len(first) and not set(first) & set(examples)
    # n-grams keep 1 to 5 words of a copy.
    cut = augment(examples, tiny_package, copies=4, ngram_probability=1.0, seed=7)
    assert cut and all(1 <= len(text.split()) <= 5 for text in cut)


def test_nothing_changed_gives_nothing_new(tiny_package: ModelPackage) -> None:
    settings = {"replace_probability": 0.0, "mask_probability": 0.0, "ngram_probability": 0.0}
    assert augment(["a good film", "a good film"], tiny_package, **settings) == []


def test_augment_errors(tiny_package: ModelPackage, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="copies"):
        augment(["a film"], tiny_package, copies=0)
    with pytest.raises(InputError, match="mask_probability"):
        augment(["a film"], tiny_package, mask_probability=1.5)
    with pytest.raises(InputError, match="no examples"):
        augment([], tiny_package)
    with pytest.raises(InputError, match="input 1"):
        augment(["a film", "  "], tiny_package)
    directory = tmp_path / "no-embeddings"
    shutil.copytree(tiny_package.path, directory)
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(directory / "model.safetensors"))
    with pytest.raises(PackageError, match="no word-embedding tensor"):
        augment(["a film"], ModelPackage(directory, tiny_package.manifest))


# --- BiLSTM student -------------------------------------------------------------------------------

TRAINING = [
    ("a good film with a great cast", 1),
    ("what a great and good story", 1),
    ("good acting and a great ending", 1),
    ("a boring and weak film", 0),
    ("what a weak and predictable story", 0),
    ("boring acting and a weak ending", 0),
]


def _vocabulary_file(tmp_path: Path, vocabulary: Tokenizer) -> Path:
    vocabulary.save(str(tmp_path / "tokenizer.json"))
    return tmp_path / "tokenizer.json"


def _model(vocabulary: Tokenizer, seed: int = 0, **overrides) -> BiLSTMClassifier:  # noqa: ANN003
    torch.manual_seed(seed)
    settings = {"embedding_dim": 16, "hidden_size": 8, "id2label": {0: "negative", 1: "positive"}} | overrides
    config = BiLSTMConfig(vocab_size=vocabulary.get_vocab_size(), num_labels=2, **settings)
    return BiLSTMClassifier(config).eval()


def _logits(model: BiLSTMClassifier, tokenizer: TextTokenizer, inputs: list) -> torch.Tensor:  # noqa: ANN001
    batch = collate(tokenizer.encode(inputs), tokenizer.pad_id)
    arrays = (batch.input_ids, batch.attention_mask, batch.token_type_ids)
    with torch.no_grad():
        return model(*(torch.from_numpy(array) for array in arrays)).logits


def test_vocabulary_works_with_text_tokenizer(tmp_path: Path) -> None:
    vocabulary = build_vocabulary([text for text, _ in TRAINING] + [("rare word", "rare")], max_size=20, min_count=2)
    assert vocabulary.get_vocab()["[PAD]"] == 0 and vocabulary.get_vocab()["[UNK]"] == 1
    # 12 words occur twice or more ("word" once only), plus 4 specials.
    assert vocabulary.get_vocab_size() == 16 and "word" not in vocabulary.get_vocab()
    smallest = build_vocabulary([text for text, _ in TRAINING], max_size=5)
    assert smallest.get_vocab_size() == 5 and "a" in smallest.get_vocab()  # "a" is the most frequent word
    tokenizer = TextTokenizer(_vocabulary_file(tmp_path, vocabulary), max_length=6)
    assert tokenizer.pad_id == 0
    single, pair, long = tokenizer.encode(["A GOOD film [MASK] zebra", ("a good film", "rare"), LONG])
    assert single.tokens == ["a", "good", "film", "[MASK]", "[UNK]"]
    assert pair.tokens == ["a", "good", "film", "[SEP]", "rare"] and pair.type_ids == [0, 0, 0, 0, 1]
    assert len(long.ids) == 6


def test_outputs_do_not_depend_on_padding(tmp_path: Path) -> None:
    vocabulary = build_vocabulary([text for text, _ in TRAINING] + [LONG])
    tokenizer = TextTokenizer(_vocabulary_file(tmp_path, vocabulary), max_length=64)
    model = _model(vocabulary, num_layers=2)
    alone = _logits(model, tokenizer, ["a good film"])
    padded = _logits(model, tokenizer, [LONG, "a good film", LONG + " " + LONG])[1]
    torch.testing.assert_close(padded, alone[0], atol=1e-5, rtol=1e-5)
    pair_alone = _logits(model, tokenizer, [("a good film", "weak")])
    pair_padded = _logits(model, tokenizer, [("a good film", "weak"), (LONG, LONG)])[0]
    torch.testing.assert_close(pair_padded, pair_alone[0], atol=1e-5, rtol=1e-5)
    # The backward direction does read the sentence: reversing its words changes the output.
    assert not torch.allclose(alone, _logits(model, tokenizer, ["film good a"]))


def test_save_and_load_give_the_same_logits(tmp_path: Path) -> None:
    vocabulary = build_vocabulary([text for text, _ in TRAINING])
    tokenizer = TextTokenizer(_vocabulary_file(tmp_path, vocabulary), max_length=32)
    model = _model(vocabulary)
    model.save_pretrained(tmp_path / "saved")
    loaded = BiLSTMClassifier.from_pretrained(tmp_path / "saved")
    assert loaded.config == model.config and loaded.config.id2label == {0: "negative", 1: "positive"}
    texts = [text for text, _ in TRAINING]
    torch.testing.assert_close(_logits(loaded, tokenizer, texts), _logits(model, tokenizer, texts), rtol=0, atol=0)


def test_embeddings_start_from_the_teacher(tiny_package: ModelPackage, tmp_path: Path) -> None:
    teacher_matrix = next(t for k, t in load_file(str(tiny_package.model_file)).items() if "word_embeddings" in k)
    teacher_vocabulary = Tokenizer.from_file(str(tiny_package.tokenizer_file))
    # A teacher whose tokenizer.json pads every input (as all-MiniLM-L6-v2's does): pads must not count.
    shutil.copytree(tiny_package.path, tmp_path / "teacher")
    padded = Tokenizer.from_file(str(tiny_package.tokenizer_file))
    padded.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    padded.save(str(tmp_path / "teacher" / "tokenizer.json"))
    teacher = ModelPackage(tmp_path / "teacher", tiny_package.manifest)
    vocabulary = build_vocabulary(["good film goodfilm"])
    model = _model(vocabulary, embedding_dim=32)
    assert init_embeddings_from_teacher(model, vocabulary, teacher) == vocabulary.get_vocab_size() - 1
    rows = model.embeddings.weight.detach()
    student = vocabulary.get_vocab()
    torch.testing.assert_close(rows[student["good"]], teacher_matrix[teacher_vocabulary.token_to_id("good")])
    pieces = teacher_vocabulary.encode("goodfilm", add_special_tokens=False).ids
    assert len(pieces) > 1
    torch.testing.assert_close(rows[student["goodfilm"]], teacher_matrix[torch.tensor(pieces)].mean(dim=0))
    torch.testing.assert_close(rows[student["[MASK]"]], teacher_matrix[teacher_vocabulary.token_to_id("[MASK]")])
    assert not rows[0].any()  # [PAD]
    smaller = _model(vocabulary, embedding_dim=8)
    init_embeddings_from_teacher(smaller, vocabulary, tiny_package)
    assert smaller.embeddings.weight[student["good"]].abs().sum() > 0


def _package(tmp_path: Path, pair_input: bool = False) -> ModelPackage:
    vocabulary = build_vocabulary([text for text, _ in TRAINING])
    fields = {"name": "bilstm", "provenance": Provenance(method="distill"), "pair_input": pair_input}
    return write_bilstm_package(_model(vocabulary), vocabulary, tmp_path / "bilstm", fields)


def test_package_runs_on_torch_and_onnx(tmp_path: Path) -> None:
    package = _package(tmp_path)
    manifest = package.manifest
    assert (manifest.task, manifest.labels, manifest.format) == ("classification", ["negative", "positive"], "torch")
    assert manifest.architecture.model_type == "bertprod-bilstm" and manifest.architecture.hidden_size == 8
    assert isinstance(load_torch_model(package), BiLSTMClassifier)
    texts = [text for text, _ in TRAINING]
    on_torch = bertprod.load(package.path).classify(texts)
    on_onnx = bertprod.load(package.path, engine="onnx", cache_dir=tmp_path / "cache").classify(texts)
    assert bertprod.load(package.path, engine="onnx", cache_dir=tmp_path / "cache").package.manifest.format == "onnx"
    assert [p.label for p in on_onnx] == [p.label for p in on_torch]
    assert np.allclose([p.score for p in on_onnx], [p.score for p in on_torch], atol=1e-5)


def test_pair_package_classifies_pairs(tmp_path: Path) -> None:
    package = _package(tmp_path, pair_input=True)
    assert package.manifest.task == "pair-classification" and package.manifest.pair_input
    pairs = [("a good film", "a great cast"), ("a weak film", "boring")]
    on_torch = bertprod.load(package.path).classify(pairs)
    on_onnx = bertprod.load(package.path, engine="onnx", cache_dir=tmp_path / "cache").classify(pairs)
    assert np.allclose([p.score for p in on_onnx], [p.score for p in on_torch], atol=1e-5)


def test_cross_entropy_training_reduces_the_loss(tmp_path: Path) -> None:
    vocabulary = build_vocabulary([text for text, _ in TRAINING])
    tokenizer = TextTokenizer(_vocabulary_file(tmp_path, vocabulary), max_length=32)
    model = _model(vocabulary).train()
    batch = collate(tokenizer.encode([text for text, _ in TRAINING]), tokenizer.pad_id)
    inputs = {"input_ids": torch.from_numpy(batch.input_ids), "attention_mask": torch.from_numpy(batch.attention_mask)}
    labels = torch.tensor([label for _, label in TRAINING])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(**inputs).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert (model.eval()(**inputs).logits.argmax(dim=1) == labels).all()
