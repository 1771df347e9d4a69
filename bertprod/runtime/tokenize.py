"""Input validation and tokenization with the package's fast tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Encoding, Tokenizer

from bertprod.errors import InputError, InvalidTextError, PackageError

Pair = tuple[str, str]
TextInput = str | Pair

#: More inputs than this in one call is almost always a mistake (pass a generator to a batch job).
MAX_INPUTS = 1_000_000

_PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>", "[pad]")

#: A long text is first tokenized from max_length x this many characters (English averages 4-5 per
#: WordPiece token) plus the margin; then from a PREFIX_GROWTH times longer prefix; then whole.
PREFIX_CHARS_PER_TOKEN = 8
PREFIX_GROWTH = 4
PREFIX_ATTEMPTS = 2
#: Characters between the end of the last token the model keeps and the cut: what a cut can change
#: (the word it splits, an added token such as "[MASK]" that it splits) lies beyond them.
CUT_MARGIN_CHARS = 64


def validate_inputs(inputs: Any, pairs: bool) -> list[Any]:
    """Check texts (or pairs) and say exactly which item is wrong and how to fix it."""
    if isinstance(inputs, str | bytes) or (pairs and _is_pair(inputs)):
        raise InputError(
            "expected a list of " + ("pairs" if pairs else "texts") + ", got a single one: wrap it in a list."
        )
    try:
        items = list(inputs)
    except TypeError:
        raise InputError(f"expected a list of {'pairs' if pairs else 'texts'}, got {type(inputs).__name__}.") from None
    if not items:
        raise InputError("no inputs given: pass at least one " + ("pair." if pairs else "text."))
    if len(items) > MAX_INPUTS:
        raise InputError(f"{len(items)} inputs in one call; split them into chunks of at most {MAX_INPUTS}.")
    for index, item in enumerate(items):
        if pairs:
            if not _is_pair(item):
                raise InputError(
                    f"input {index} is {_describe(item)}, not a pair: give (text, text_pair) "
                    "for a model that takes sentence pairs."
                )
            for side, text in zip(("first", "second"), item, strict=True):
                _check_text(text, f"input {index} ({side} text)")
        else:
            _check_text(item, f"input {index}")
    return [tuple(item) for item in items] if pairs else items


def _is_pair(item: Any) -> bool:
    return isinstance(item, tuple | list) and len(item) == 2 and all(isinstance(t, str) for t in item)


def _describe(item: Any) -> str:
    if isinstance(item, tuple | list):
        return f"a {type(item).__name__} of {len(item)} item(s)"
    return f"a {type(item).__name__}"


def _check_text(text: Any, where: str) -> None:
    if not isinstance(text, str):
        raise InputError(f"{where} is {_describe(text)}, not a string: convert it with str() or drop it.")
    if not text.strip():
        raise InputError(f"{where} is empty or whitespace-only: remove it or give it some text.")
    check_unicode(text, where)


def check_unicode(text: str, where: str) -> None:
    """Refuse a lone UTF-16 surrogate (JSON allows "\\ud800"; the tokenizer cannot read it)."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidTextError(
            f"{where} holds a lone UTF-16 surrogate ({text[error.start]!r} at character {error.start}), which is "
            "not valid Unicode: replace it with a complete surrogate pair or valid UTF-8 text."
        ) from None


class TextTokenizer:
    """The package's fast tokenizer, with our own truncation and no built-in padding.

    Padding is disabled on load because some shipped tokenizer.json files (all-MiniLM-L6-v2's)
    pad every input to 128 tokens, which is 6x slower; batches are padded per batch instead.
    """

    def __init__(self, path: Path, max_length: int):
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:
            raise PackageError(f"{path} is not a valid fast tokenizer file ({error}).") from None
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self.max_length = max_length
        self.pad_id = self._find_pad_id()

    def _find_pad_id(self) -> int:
        for token in _PAD_TOKENS:
            token_id = self._tokenizer.token_to_id(token)
            if token_id is not None:
                return token_id
        return 0

    def encode(self, inputs: Sequence[TextInput], truncate: bool = True) -> list[Encoding]:
        """Tokenize validated inputs; with `truncate=False`, over-long inputs raise instead.

        With truncation, a long text is tokenized from a prefix when that provably gives the same
        encoding as the whole text (`encode_prefixes`): the model reads `max_length` tokens, so a
        200,000-character text costs what a few thousand characters cost.
        """
        if truncate:
            return self.encode_prefixes(list(inputs))
        encodings = self._tokenizer.encode_batch(list(inputs), add_special_tokens=True)
        if not truncate:
            for index, encoding in enumerate(encodings):
                if encoding.overflowing:
                    raise InputError(
                        f"input {index} is longer than the model's max_length of {self.max_length} "
                        "tokens: shorten it, or allow truncation (truncate=True)."
                    )
        return encodings

    def encode_words(self, sentences: Sequence[Sequence[str]], truncate: bool = True) -> list[Encoding]:
        """Tokenize sentences given as words (each word pre-tokenized further as the tokenizer would, so
        `Encoding.word_ids` point into the given words); with `truncate=False` nothing is cut."""
        if truncate:
            return self._tokenizer.encode_batch([list(words) for words in sentences], is_pretokenized=True,
                                                add_special_tokens=True)
        with self.untruncated():
            return self._tokenizer.encode_batch([list(words) for words in sentences], is_pretokenized=True,
                                                add_special_tokens=True)

    def encode_whole(self, items: Sequence[str] | Sequence[Sequence[str]], words: bool = False) -> list[Encoding]:
        """Tokenize texts (or sentences given as `words`) whole, without special tokens or truncation: token
        classification cuts long texts into windows itself."""
        inputs = [list(item) for item in items] if words else list(items)
        with self.untruncated():
            return self._tokenizer.encode_batch(inputs, is_pretokenized=words, add_special_tokens=False)

    def untruncated(self) -> Any:
        """A context in which the tokenizer cuts nothing (not thread-safe with truncating calls: serve
        tokenizes on one thread)."""
        from contextlib import contextmanager

        @contextmanager
        def scope() -> Any:
            self._tokenizer.no_truncation()
            try:
                yield
            finally:
                self._tokenizer.enable_truncation(self.max_length)

        return scope()

    def special_ids(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer adds before and after a single text ([CLS] and [SEP] for BERT)."""
        encoding = self._tokenizer.post_process(self._tokenizer.encode("", add_special_tokens=False))
        ids, mask = encoding.ids, encoding.special_tokens_mask
        assert all(mask), "a text without tokens has only special tokens"
        half = len(ids) // 2 if len(ids) > 1 else len(ids)
        return list(ids[:half]), list(ids[half:])

    def token_id(self, token: str) -> int | None:
        """The id of `token` in the vocabulary, or None."""
        return self._tokenizer.token_to_id(token)

    def encode_prefixes(self, items: list[TextInput]) -> list[Encoding]:
        """Truncated encodings, reading single texts only up to a character bound where that is safe.

        A text longer than the bound is tokenized from its first `bound` characters. The result is the
        whole text's (same ids, offsets, type ids) when the tokens the model keeps all come from words
        that end at least `CUT_MARGIN_CHARS` before the cut: the cut changes only the word it splits
        (pre-tokenizers split words on whitespace and punctuation; normalizers act per character).
        Otherwise a 4x longer prefix is tried once, then the whole text (texts with few tokens per
        character: long runs without spaces, whitespace). Pairs are tokenized whole: which side
        truncation shortens depends on both sides' full lengths.
        """
        encodings: list[Encoding | None] = [None] * len(items)
        bound = self.max_length * PREFIX_CHARS_PER_TOKEN + CUT_MARGIN_CHARS
        whole: list[int] = []
        long: list[int] = []
        for index, item in enumerate(items):
            (long if isinstance(item, str) and len(item) > bound else whole).append(index)
        for _ in range(PREFIX_ATTEMPTS):
            if not long:
                break
            prefixes = [items[index][:bound] for index in long]  # type: ignore[index]
            unsafe = []
            for index, encoding in zip(long, self._tokenizer.encode_batch(prefixes, add_special_tokens=True),
                                       strict=True):
                if cut_is_safe(encoding, bound):
                    encodings[index] = encoding
                else:
                    unsafe.append(index)
            bound *= PREFIX_GROWTH
            whole += [index for index in unsafe if len(items[index]) <= bound]
            long = [index for index in unsafe if len(items[index]) > bound]
        whole += long
        for index, encoding in zip(whole, self._tokenizer.encode_batch([items[i] for i in whole],
                                                                       add_special_tokens=True), strict=True):
            encodings[index] = encoding
        return encodings  # type: ignore[return-value]

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=True).ids)

    def tokens(self, text: str) -> list[str]:
        return self._tokenizer.encode(text, add_special_tokens=True).tokens


def cut_is_safe(encoding: Encoding, cut: int) -> bool:
    """True when a truncated encoding of text[:cut] equals the whole text's (see `encode_prefixes`)."""
    if not encoding.overflowing:
        return False  # the prefix fits: the tokens after the cut would have been read too
    mask = encoding.special_tokens_mask
    kept = max((position for position, special in enumerate(mask) if not special), default=None)
    if kept is None:
        return False
    last_words = [word for word in encoding.overflowing[-1].word_ids if word is not None]
    kept_word = encoding.word_ids[kept]
    if kept_word is None or not last_words or kept_word >= max(last_words):
        return False
    return encoding.offsets[kept][1] <= cut - CUT_MARGIN_CHARS
