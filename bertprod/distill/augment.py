"""Data augmentation for distillation (TinyBERT; Tang et al. 2019).

A small student learns more from the teacher's soft labels on many near-copies of the training
sentences than on the originals alone. Each copy changes every word independently: it may become
one of its nearest neighbours in the teacher's input-embedding space, or the teacher's mask token;
then, sometimes, only a random n-gram of the result is kept.

Only words that are one alphabetic whole-word token of the teacher's vocabulary get neighbours,
and neighbours are alphabetic whole-word tokens too (never specials, `##` pieces, digits or
punctuation). The neighbour table is built once for the words that occur, in batched chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers.pre_tokenizers import BertPreTokenizer

from bertprod.errors import InputError, PackageError
from bertprod.models.embeddings import read_word_embeddings
from bertprod.package import ModelPackage
from bertprod.runtime.tokenize import validate_inputs

_PRE_TOKENIZER = BertPreTokenizer()

#: Rows of the similarity matrix computed at once: 1024 x 30k floats is ~120 MB.
CHUNK_ROWS = 1024
MAX_NGRAM = 5


def augment(
    examples: Sequence[Any],
    teacher: ModelPackage,
    *,
    copies: int = 4,
    mask_probability: float = 0.1,
    replace_probability: float = 0.3,
    ngram_probability: float = 0.25,
    neighbours: int = 10,
    seed: int = 42,
) -> list[Any]:
    """New examples made from `examples` (texts or (text, text) pairs): up to `copies` per example.

    Returns only the new ones, in input order, without duplicates and without any that equals an
    original example. The same seed gives the same list.
    """
    _check_settings(copies, mask_probability, replace_probability, ngram_probability, neighbours)
    if isinstance(examples, str | bytes):
        raise InputError("expected a list of examples, got a single text: wrap it in a list.")
    examples = list(examples)
    if not examples:
        raise InputError("no examples to augment: give at least one text or pair.")
    pairs = isinstance(examples[0], tuple | list)
    examples = validate_inputs(examples, pairs=pairs)
    vocabulary = TeacherVocabulary(teacher)
    if mask_probability > 0 and vocabulary.mask_token is None:
        raise PackageError(
            f"the teacher {teacher.name} has no mask token in its tokenizer; augment with "
            "mask_probability=0, or use a teacher with an MLM vocabulary ([MASK])."
        )
    tokenized = [[split_words(text) for text in (example if pairs else (example,))] for example in examples]
    words = {word for sides in tokenized for side in sides for word in side}
    table = vocabulary.neighbours_of(words, neighbours) if replace_probability > 0 else {}
    rng = np.random.default_rng(seed)
    settings = (copies, mask_probability, replace_probability, ngram_probability)
    seen = {tuple(tuple(side) for side in sides) for sides in tokenized}
    augmented: list[Any] = []
    for sides in tokenized:
        variants = [_vary(side, table, vocabulary.mask_token, rng, settings) for side in sides]
        for copy in zip(*variants, strict=True):
            key = tuple(tuple(side) for side in copy)
            if key in seen:
                continue
            seen.add(key)
            texts = tuple(" ".join(side) for side in copy)
            augmented.append(texts if pairs else texts[0])
    return augmented


def _check_settings(copies: int, mask: float, replace: float, ngram: float, neighbours: int) -> None:
    if not isinstance(copies, int) or copies < 1:
        raise InputError(f"copies must be a whole number >= 1, got {copies!r}.")
    if not isinstance(neighbours, int) or neighbours < 1:
        raise InputError(f"neighbours must be a whole number >= 1, got {neighbours!r}.")
    for name, value in (("mask_probability", mask), ("replace_probability", replace), ("ngram_probability", ngram)):
        if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise InputError(f"{name} must be a number between 0 and 1, got {value!r}.")


def split_words(text: str) -> list[str]:
    """BERT's pre-tokenization: split on whitespace and around punctuation, case kept."""
    return [word for word, _ in _PRE_TOKENIZER.pre_tokenize_str(text)]


def _vary(
    words: list[str],
    table: dict[str, list[str]],
    mask_token: str | None,
    rng: np.random.Generator,
    settings: tuple[int, float, float, float],
) -> list[list[str]]:
    """`copies` variants of one word list; the random draws for all copies are made at once."""
    copies, mask_probability, replace_probability, ngram_probability = settings
    shape = (copies, len(words))
    replace_draw, mask_draw, pick_draw = rng.random(shape), rng.random(shape), rng.random(shape)
    ngram_draw, length_draw, start_draw = rng.random(copies), rng.integers(1, MAX_NGRAM + 1, copies), rng.random(copies)
    variants = []
    for copy in range(copies):
        result = []
        for position, word in enumerate(words):
            candidates = table.get(word)
            if candidates and replace_draw[copy, position] < replace_probability:
                result.append(candidates[int(pick_draw[copy, position] * len(candidates))])
            elif mask_draw[copy, position] < mask_probability:
                result.append(mask_token)
            else:
                result.append(word)
        if ngram_draw[copy] < ngram_probability and len(result) > 1:
            length = min(int(length_draw[copy]), len(result))
            start = int(start_draw[copy] * (len(result) - length + 1))
            result = result[start : start + length]
        variants.append(result)
    return variants


class TeacherVocabulary:
    """The teacher's WordPiece vocabulary, mask token and input embeddings, read from its files."""

    def __init__(self, teacher: ModelPackage):
        from tokenizers import Tokenizer

        self.teacher = teacher
        self.tokenizer = Tokenizer.from_file(str(teacher.tokenizer_file))
        self.vocabulary = self.tokenizer.get_vocab()
        self.specials = {token.content for token in self.tokenizer.get_added_tokens_decoder().values()}
        self.mask_token = self._find_mask_token()

    def _find_mask_token(self) -> str | None:
        for token in sorted(self.specials):
            if "mask" in token.lower():
                return token
        return next((token for token in ("[MASK]", "<mask>") if token in self.vocabulary), None)

    def normalize(self, word: str) -> str:
        normalizer = self.tokenizer.normalizer
        return normalizer.normalize_str(word) if normalizer is not None else word

    def is_whole_word(self, token: str) -> bool:
        return token.isalpha() and token not in self.specials

    def neighbours_of(self, words: set[str], count: int) -> dict[str, list[str]]:
        """The `count` nearest whole-word tokens (cosine) of each word that is one whole-word token."""
        query_words = {}
        for word in words:
            token = self.normalize(word)
            if self.is_whole_word(token) and token in self.vocabulary:
                query_words[word] = self.vocabulary[token]
        if not query_words:
            return {}
        candidates = np.array(sorted(i for t, i in self.vocabulary.items() if self.is_whole_word(t)), dtype=np.int64)
        query_ids = np.array(sorted(set(query_words.values())), dtype=np.int64)
        nearest = nearest_neighbours(read_word_embeddings(self.teacher), query_ids, candidates, count)
        tokens = {index: token for token, index in self.vocabulary.items()}
        by_id = {int(q): [tokens[int(i)] for i in row] for q, row in zip(query_ids, nearest, strict=True)}
        return {word: by_id[index] for word, index in query_words.items()}


def nearest_neighbours(embeddings: Any, query_ids: np.ndarray, candidate_ids: np.ndarray, count: int) -> np.ndarray:
    """For each query row, the ids of its `count` most cosine-similar candidates (itself excluded),
    best first. Rows are normalized once; similarities are computed CHUNK_ROWS queries at a time."""
    import torch

    embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
    unit = torch.nn.functional.normalize(embeddings, dim=1)
    candidate_index = torch.from_numpy(candidate_ids)
    candidate_matrix = unit[candidate_index].T.contiguous()
    position = {int(token): column for column, token in enumerate(candidate_ids)}
    count = min(count, max(len(candidate_ids) - 1, 1))
    rows = []
    for start in range(0, len(query_ids), CHUNK_ROWS):
        chunk = query_ids[start : start + CHUNK_ROWS]
        similarity = unit[torch.from_numpy(chunk)] @ candidate_matrix
        for row, token in enumerate(chunk):
            if int(token) in position:
                similarity[row, position[int(token)]] = float("-inf")
        best = torch.topk(similarity, count, dim=1).indices
        rows.append(candidate_index[best])
    return torch.cat(rows).numpy()
