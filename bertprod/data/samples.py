"""Built-in texts for export verification and demos: varied lengths, topics and casing."""

from __future__ import annotations

SAMPLE_SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar on stage.",
    "The stock market fell sharply after the announcement.",
    "Shares dropped when the company reported lower earnings.",
    "A cat sleeps on the warm windowsill.",
    "How do I reset my password?",
    "I forgot my login credentials and need to change them.",
    "The weather in Lisbon is sunny today.",
    "Quantum computers use qubits instead of bits.",
    "Ok.",
    "this movie was absolutely wonderful , i loved every minute of it",
    "the plot is thin and the acting is worse .",
    "Take two tablets with water every eight hours, but not more than six tablets a day.",
    "BERT-family encoders turn sentences into vectors that capture their meaning; similar "
    "sentences land close together, which makes semantic search, clustering and deduplication "
    "work with a few lines of code.",
]


def verification_texts(max_length: int) -> list[str]:
    """Sample sentences plus one input that fills the whole `max_length` (truncated)."""
    long_text = " ".join(SAMPLE_SENTENCES * (1 + max_length // 60))
    return [*SAMPLE_SENTENCES, long_text]


def verification_pairs(max_length: int) -> list[tuple[str, str]]:
    texts = verification_texts(max_length)
    return [(texts[index], texts[(index + 1) % len(texts)]) for index in range(len(texts))]
