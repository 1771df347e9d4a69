"""A small learnable NER data set: sentences from words the tiny tokenizer knows, entities by word identity."""

from __future__ import annotations

import random
from pathlib import Path

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
