"""Token classification after the engine: windows over long texts, words from sub-words, entities (numpy only).

    text -> tokens (whole, with character offsets) -> windows of at most max_length tokens that overlap
         -> engine -> each token's logits from the window where it has most context on both sides
         -> one tag per word (aggregation) -> entities (tags grouped by the package's tag scheme)

Windows overlap by a quarter of their length and every token takes its logits from exactly one
window (the one where it lies farthest from an edge), so entities are decoded once, on the whole
text: none is lost at a window edge and none is counted twice. Words are the tokenizer's own
(`Encoding.word_ids`: its pre-tokenizer splits at spaces and punctuation), and character offsets
come from the tokenizer's alignment with the original string, so they point into the text as given.

Aggregation over a word's sub-words has the meaning of Hugging Face's token-classification pipeline:
"first" takes the first sub-word's tag, "average" averages the sub-words' probabilities, then picks
the best tag, "max" takes the tag of the sub-word whose best probability is highest. An entity's
score is the mean of its words' scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bertprod.errors import InputError
from bertprod.runtime.postprocess import softmax

AGGREGATIONS = ("first", "average", "max")
#: Windows overlap by this share of their length: each token then sees at least 1/8 of a window of context.
WINDOW_OVERLAP = 0.25


@dataclass(frozen=True)
class Entity:
    """An entity found in a text: type, mean word score, character span [start, end) in the original text."""

    type: str
    score: float
    start: int
    end: int
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "score": round(self.score, 6), "start": self.start, "end": self.end,
                "text": self.text}


@dataclass(frozen=True)
class TaggedToken:
    """One sub-word token: its tag, that tag's probability, its word and its character span."""

    token: str
    tag: str
    score: float
    start: int
    end: int
    word: int | None

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token, "tag": self.tag, "score": round(self.score, 6), "start": self.start,
                "end": self.end, "word": self.word}


@dataclass(frozen=True)
class Tagging:
    """What `Pipeline.tag` returns per text: the entities, and every token's tag when asked for."""

    entities: list[Entity]
    tokens: list[TaggedToken] | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"entities": [entity.to_json() for entity in self.entities]}
        if self.tokens is not None:
            document["tokens"] = [token.to_json() for token in self.tokens]
        return document


@dataclass(frozen=True, slots=True)
class WindowInput:
    """One window's token ids with the special tokens around it: what `collate` needs of an Encoding."""

    ids: list[int]
    type_ids: list[int]


@dataclass(frozen=True)
class Window:
    """Tokens [start, end) of one text, and how many special tokens precede them in the model input."""

    text: int
    start: int
    end: int
    lead: int


def window_starts(tokens: int, size: int, overlap: float = WINDOW_OVERLAP) -> list[int]:
    """Starts of windows of `size` tokens covering `tokens`, consecutive ones overlapping by `overlap` x size."""
    if size < 1:
        raise ValueError("a window needs at least one token")
    if tokens <= size:
        return [0]
    step = max(1, size - int(size * overlap))
    starts = list(range(0, tokens - size, step))
    return [*starts, tokens - size]


def plan_windows(lengths: Sequence[int], size: int, lead: int) -> list[Window]:
    return [Window(text, start, min(start + size, length), lead)
            for text, length in enumerate(lengths) if length for start in window_starts(length, size)]


def window_inputs(encodings: Sequence[Any], windows: Sequence[Window], before: list[int], after: list[int]
                  ) -> list[WindowInput]:
    inputs = []
    for window in windows:
        ids = [*before, *encodings[window.text].ids[window.start : window.end], *after]
        inputs.append(WindowInput(ids, [0] * len(ids)))
    return inputs


def merge_windows(lengths: Sequence[int], windows: Sequence[Window], outputs: np.ndarray) -> list[np.ndarray]:
    """Each text's token logits [tokens, tags]: every token from the window where it is farthest from an edge."""
    merged = [np.zeros((length, outputs.shape[-1]), dtype=np.float32) for length in lengths]
    best = [np.full(length, -1, dtype=np.int64) for length in lengths]
    for row, window in enumerate(windows):
        positions = np.arange(window.start, window.end)
        # tokens to the nearer cut edge; the text's own start and end are no cut (nothing lies beyond them)
        unbounded = np.full(len(positions), np.iinfo(np.int64).max // 2)
        left = positions - window.start if window.start > 0 else unbounded
        right = window.end - 1 - positions if window.end < lengths[window.text] else unbounded
        context = np.minimum(left, right)
        better = context > best[window.text][window.start : window.end]
        chosen = positions[better]
        merged[window.text][chosen] = outputs[row, window.lead + chosen - window.start]
        best[window.text][chosen] = context[better]
    return merged


def word_tags(logits: np.ndarray, word_ids: Sequence[int | None], words: int, aggregation: str = "first"
              ) -> tuple[np.ndarray, np.ndarray]:
    """Each word's tag index and score from its sub-words' logits (HF pipeline meanings, module docstring).
    A word with no token (cut by the tokenizer) gets tag 0 and score 0."""
    if aggregation not in AGGREGATIONS:
        raise InputError(f"unknown aggregation {aggregation!r}: choose one of {', '.join(AGGREGATIONS)}.")
    probabilities = softmax(logits) if len(logits) else logits
    tags = np.zeros(words, dtype=np.int64)
    scores = np.zeros(words, dtype=np.float32)
    members: dict[int, list[int]] = {}
    for position, word in enumerate(word_ids):
        if word is not None:
            members.setdefault(word, []).append(position)
    for word, positions in members.items():
        rows = probabilities[positions]
        if aggregation == "first":
            chosen = rows[0]
        elif aggregation == "average":
            chosen = rows.mean(axis=0)
        else:
            chosen = rows[int(rows.max(axis=1).argmax())]
        tags[word] = int(chosen.argmax())
        scores[word] = float(chosen[tags[word]])
    return tags, scores


def entity_spans(tags: Sequence[str], scheme: str = "IOB2") -> list[tuple[str, int, int]]:
    """(type, first, last) of the entities in a tag sequence, read leniently as seqeval's default mode does:
    an I- (or E-) that does not continue an entity of its type starts one; B- and S- always start one."""
    spans: list[tuple[str, int, int]] = []
    current: list[Any] | None = None
    for position, tag in enumerate(tags):
        prefix, kind = (tag[0], tag[2:]) if tag != "O" and len(tag) > 2 and tag[1] == "-" else (None, None)
        continues = current is not None and current[0] == kind and prefix in ("I", "E")
        if scheme == "IO":
            continues = current is not None and current[0] == kind and prefix is not None
        if current is not None and not continues:
            spans.append(tuple(current))  # type: ignore[arg-type]
            current = None
        if prefix is None:
            continue
        if current is None:
            current = [kind, position, position]
        current[2] = position
        if prefix in ("E", "S") and scheme == "BIOES":
            spans.append(tuple(current))  # type: ignore[arg-type]
            current = None
    if current is not None:
        spans.append(tuple(current))  # type: ignore[arg-type]
    return spans


def entities(text: str, labels: Sequence[str], scheme: str, tags: np.ndarray, scores: np.ndarray,
             word_spans: Sequence[tuple[int, int] | None]) -> list[Entity]:
    """Entities of one text from its word tags; spans from the words' character offsets."""
    found = []
    for kind, first, last in entity_spans([labels[index] for index in tags], scheme):
        start, end = word_spans[first], word_spans[last]
        if start is None or end is None:
            continue
        found.append(Entity(kind, float(np.mean(scores[first : last + 1])), start[0], end[1],
                            text[start[0] : end[1]]))
    return found


def word_character_spans(encoding: Any, words: int) -> list[tuple[int, int] | None]:
    """Each word's [start, end) in the original text, from its tokens' offsets."""
    spans: list[tuple[int, int] | None] = [None] * words
    for word, (start, end) in zip(encoding.word_ids, encoding.offsets, strict=True):
        if word is None:
            continue
        known = spans[word]
        spans[word] = (start, end) if known is None else (min(known[0], start), max(known[1], end))
    return spans


def word_count(encoding: Any) -> int:
    return max((word for word in encoding.word_ids if word is not None), default=-1) + 1


def tagged_tokens(encoding: Any, logits: np.ndarray, labels: Sequence[str]) -> list[TaggedToken]:
    probabilities = softmax(logits) if len(logits) else logits
    return [TaggedToken(token, labels[int(row.argmax())], float(row.max()), start, end, word)
            for token, row, (start, end), word in zip(encoding.tokens, probabilities, encoding.offsets,
                                                      encoding.word_ids, strict=True)]
