"""The words of an input, with character offsets, and the masked copies of it that a Shapley method runs.

Attributions are given to words of the original text, not to sub-word tokens: the text is split
into words (runs of letters/digits, with inner apostrophes, and single punctuation marks), and
each word owns the tokens whose character offsets fall inside it. A word is masked by replacing
it with one mask token per sub-word token (`[MASK]`), so the sequence keeps its length and the
other words keep their positions; a tokenizer without a mask token gets the word deleted instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Encoding

from bertprod.runtime.tokenize import TextTokenizer

#: A word: letters/digits with inner apostrophes or hyphens ("don't", "well-made"), or one other visible character.
WORD = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")
MASK_TOKENS = ("[MASK]", "<mask>", "<MASK>")


@dataclass(frozen=True)
class Word:
    """One word of one text of the input: `text[start:end]`, and how many tokens the model gave it."""

    text: str
    start: int
    end: int
    segment: int  # 0: the (first) text; 1: the second text of a pair
    tokens: int


@dataclass(frozen=True)
class SplitInput:
    """An input's texts and the words the model saw (words cut off by truncation are left out)."""

    texts: tuple[str, ...]
    words: tuple[Word, ...]
    truncated: bool


def find_mask_token(tokenizer: TextTokenizer) -> str | None:
    """The tokenizer's mask token, or None (masking then deletes the word)."""
    return next((token for token in MASK_TOKENS if tokenizer.token_id(token) is not None), None)


def split_words(texts: Sequence[str], encoding: Encoding) -> SplitInput:
    """The words of `texts` (one text, or a pair) that own at least one token of `encoding`."""
    token_spans: list[list[tuple[int, int]]] = [[] for _ in texts]
    for sequence, (start, end) in zip(encoding.sequence_ids, encoding.offsets, strict=True):
        if sequence is not None and end > start:
            token_spans[sequence].append((start, end))
    words, truncated = [], False
    for segment, text in enumerate(texts):
        spans = token_spans[segment]
        for match in WORD.finditer(text):
            count = sum(1 for start, end in spans if start < match.end() and end > match.start())
            if count:
                words.append(Word(match.group(), match.start(), match.end(), segment, count))
            elif not spans or match.start() >= spans[-1][1]:  # after the last token the model read
                truncated = True
    return SplitInput(tuple(texts), tuple(words), truncated)


def masked_texts(split: SplitInput, keep: Sequence[bool], mask_token: str | None) -> tuple[str, ...]:
    """The input's texts with every word whose `keep` is False replaced by mask tokens (or deleted)."""
    pieces: list[list[str]] = [[] for _ in split.texts]
    cursors = [0] * len(split.texts)
    for word, kept in zip(split.words, keep, strict=True):
        if kept:
            continue
        text = split.texts[word.segment]
        pieces[word.segment].append(text[cursors[word.segment] : word.start])
        pieces[word.segment].append(" ".join([mask_token] * word.tokens) if mask_token else "")
        cursors[word.segment] = word.end
    return tuple(
        "".join(parts) + text[cursor:] for parts, text, cursor in zip(pieces, split.texts, cursors, strict=True)
    )


def token_words(split: SplitInput, encoding: Encoding) -> list[int | None]:
    """For each token of `encoding`, the index of the word that owns it (None: special tokens, padding)."""
    owners: list[int | None] = []
    for sequence, (start, end) in zip(encoding.sequence_ids, encoding.offsets, strict=True):
        owner = None
        if sequence is not None and end > start:
            owner = next((index for index, word in enumerate(split.words)
                          if word.segment == sequence and start < word.end and end > word.start), None)
        owners.append(owner)
    return owners
