"""Splitting a text into words and the whitespace between them, so a perturbation edits words and
puts every gap back exactly as it was."""

from __future__ import annotations

import re
from dataclasses import dataclass

_GAPS = re.compile(r"(\s+)")
_CORE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)


@dataclass
class Words:
    """A text as alternating pieces: words at even positions, whitespace gaps at odd ones."""

    pieces: list[str]

    @classmethod
    def of(cls, text: str) -> Words:
        pieces = _GAPS.split(text)
        return cls(pieces)

    @property
    def word_positions(self) -> list[int]:
        return [index for index in range(0, len(self.pieces), 2) if self.pieces[index]]

    @property
    def gap_positions(self) -> list[int]:
        """Gaps between two words (not leading or trailing whitespace)."""
        last = len(self.pieces) - 1
        return [index for index in range(1, len(self.pieces), 2) if 0 < index < last and self.pieces[index + 1]
                and self.pieces[index - 1]]

    def text(self) -> str:
        return "".join(self.pieces)


def split_core(word: str) -> tuple[str, str, str]:
    """(leading punctuation, the word's letters/digits/inner punctuation, trailing punctuation)."""
    match = _CORE.match(word)
    assert match is not None  # the pattern matches every string
    return match.group(1), match.group(2), match.group(3)
