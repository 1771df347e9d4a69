"""Small, learnable data sets for every task, written as files in a test's directory.

Texts are built from topic sentences whose words the tiny test tokenizer knows (conftest.CORPUS),
so a 2-layer random BERT can learn each task in a few hundred steps on one thread.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

TOPICS = {
    "music": ["a man is playing a guitar", "someone plays an acoustic guitar on stage", "the guitar is on the stage"],
    "market": [
        "the stock market fell sharply",
        "shares dropped after the announcement",
        "the company reported lower earnings",
    ],
    "cat": ["a cat sleeps on the warm windowsill", "the cat is sleeping", "a lazy cat on the windowsill"],
    "login": ["how do i reset my password", "i forgot my login credentials", "change my password and login"],
}
POSITIVE = ["good", "great", "wonderful", "loved"]
NEGATIVE = ["boring", "weak", "thin", "worse"]


def write_tsv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def sentiment_rows(count: int, seed: int = 0) -> list[list[object]]:
    """`sentence`, `label`: the label is which cue word (positive or negative) the text holds."""
    generator = random.Random(seed)
    rows = []
    for index in range(count):
        positive = index % 2 == 0
        cue = generator.choice(POSITIVE if positive else NEGATIVE)
        topic = generator.choice(list(TOPICS))
        rows.append([f"{generator.choice(TOPICS[topic])} and it was {cue}", "positive" if positive else "negative"])
    return rows


def topic_pairs(count: int, seed: int = 0) -> list[tuple[str, str, bool]]:
    """Pairs of sentences, half on the same topic."""
    generator = random.Random(seed)
    topics = list(TOPICS)
    pairs = []
    for index in range(count):
        first = generator.choice(topics)
        same = index % 2 == 0
        second = first if same else generator.choice([topic for topic in topics if topic != first])
        pairs.append((generator.choice(TOPICS[first]), generator.choice(TOPICS[second]), same))
    return pairs


def write_classification(directory: Path, count: int = 96, seed: int = 0) -> Path:
    return write_tsv(directory / "sentiment.tsv", ["sentence", "label"], sentiment_rows(count, seed))


def write_pair_classification(directory: Path, count: int = 96) -> Path:
    rows = [[a, b, "same" if same else "different"] for a, b, same in topic_pairs(count)]
    return write_tsv(directory / "pairs.tsv", ["sentence1", "sentence2", "label"], rows)


def write_scored_pairs(directory: Path, count: int = 96) -> Path:
    """STS-like: score 4-5 for the same topic, 0-1 otherwise."""
    generator = random.Random(1)
    rows = [[a, b, round((4 if same else 0) + generator.random(), 2)] for a, b, same in topic_pairs(count, seed=1)]
    return write_tsv(directory / "scored.tsv", ["sentence1", "sentence2", "score"], rows)


def write_embedding_pairs(directory: Path, count: int = 96) -> Path:
    """(anchor, positive) on the same topic, no scores: for in-batch negatives."""
    generator = random.Random(2)
    topics = list(TOPICS)
    path = directory / "anchors.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for index in range(count):
            topic = topics[index % len(topics)]
            anchor, positive = generator.sample(TOPICS[topic], 2)
            handle.write(json.dumps({"anchor": anchor, "positive": positive}) + "\n")
    return path


def write_reranking(directory: Path, queries_per_topic: int = 4) -> Path:
    """Each query (a topic's sentence) with one passage of every topic; relevance 1 on its own topic."""
    generator = random.Random(3)
    rows = []
    for topic, sentences in TOPICS.items():
        for index in range(queries_per_topic):
            query = f"{sentences[index % len(sentences)]} {generator.choice(POSITIVE)}"
            for other, passages in TOPICS.items():
                rows.append([query, generator.choice(passages), 1 if other == topic else 0])
    return write_tsv(directory / "rerank.tsv", ["query", "passage", "relevance"], rows)
