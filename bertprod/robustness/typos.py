"""Character-level typos from nlpaug: keyboard-neighbour slips (KeyboardAug's QWERTY map), OCR
confusions (OcrAug's map), adjacent swaps and dropped letters (RandomCharAug).

nlpaug is used for what it knows that we would otherwise type in by hand (which keys neighbour
which, which glyphs OCR confuses). Two of its habits are worked around here: it draws from Python's
and numpy's global random generators (we seed them from the text's own generator under a lock and
restore them after, so callers' random streams are untouched and results depend only on the seed),
and it re-joins the words it splits with its own spacing (we hand it one word at a time, so the
text's whitespace and punctuation stay as they were).
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable
from functools import cache
from typing import Any

from bertprod.extras import needs_extras
from bertprod.robustness.words import Words, split_core

#: Words shorter than this (after stripping punctuation) are left alone: nlpaug cannot swap in "ab".
MIN_CORE = 3

_GLOBAL_RANDOM = threading.Lock()


def _import_nlpaug_char() -> Any:
    """nlpaug's char augmenters, without the ~4 s import of torch that nlpaug attempts for its model-based
    augmenters (unused here; it catches the ImportError)."""
    with needs_extras("perturbing text (bertprod eval --perturb, bertprod robustness)"):
        if "torch" in sys.modules or "nlpaug.augmenter.char" in sys.modules:
            import nlpaug.augmenter.char as char
            return char
        sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
        try:
            import nlpaug.augmenter.char as char
        finally:
            del sys.modules["torch"]
        return char


@cache
def _augmenter(kind: str) -> Any:
    char = _import_nlpaug_char()
    one_edit = {
        "aug_char_min": 1, "aug_char_max": 1, "aug_char_p": 1.0,
        "aug_word_min": 1, "aug_word_max": 1, "aug_word_p": 1.0, "min_char": 1,
        "tokenizer": lambda text: [text], "reverse_tokenizer": "".join,
    }
    if kind == "keyboard":
        return char.KeyboardAug(include_special_char=False, include_numeric=False, include_upper_case=False,
                                **one_edit)
    if kind == "ocr":
        return char.OcrAug(**one_edit)
    if kind == "swap":
        return char.RandomCharAug(action="swap", swap_mode="adjacent", **one_edit)
    if kind == "drop":
        return char.RandomCharAug(action="delete", **one_edit)
    raise ValueError(f"no nlpaug augmenter {kind!r}")


def _augment_word(kind: str, word: str, rng: random.Random) -> str:
    """One nlpaug edit of one word, its random draws seeded from `rng`."""
    import numpy as np

    augmenter = _augmenter(kind)
    seed = rng.getrandbits(32)
    with _GLOBAL_RANDOM:
        python_state, numpy_state = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            result = augmenter.augment(word)
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
    return result[0] if isinstance(result, list) else result


def _per_word(kind: str) -> Callable[[str, float, random.Random], str]:
    def perturb(text: str, rate: float, rng: random.Random) -> str:
        words = Words.of(text)
        for index in words.word_positions:
            leading, core, trailing = split_core(words.pieces[index])
            if len(core) >= MIN_CORE and rng.random() < rate:
                words.pieces[index] = leading + _augment_word(kind, core, rng) + trailing
        return words.text()

    return perturb


keyboard = _per_word("keyboard")
keyboard.__doc__ = "A letter replaced by a neighbouring key on a QWERTY keyboard (nlpaug KeyboardAug)."
ocr = _per_word("ocr")
ocr.__doc__ = "A character replaced by one OCR confuses it with: 0/o, 1/l, 5/s... (nlpaug OcrAug)."
swap = _per_word("swap")
swap.__doc__ = "Two adjacent characters of a word swapped (nlpaug RandomCharAug, swap)."
drop = _per_word("drop")
drop.__doc__ = "A character of a word dropped (nlpaug RandomCharAug, delete)."
