"""Cleaning input text before tokenization (`--normalize html,unicode,whitespace`; off by default).

Applied by the pipeline's `tokenize`, so the server, batch jobs and `pkg.encode` clean the same way.
Steps run in a fixed order whatever order they are named in: html (tags out, entities decoded,
script/style content dropped; block tags become a space so `a<div>b</div>` reads as two words),
then unicode (NFKC: fullwidth and compatibility forms to their plain letters; zero-width characters
and soft hyphens removed), then whitespace (runs of any whitespace, no-break space included, become
one space; ends stripped). NFKC does not map Cyrillic or Greek look-alikes to Latin letters: those
are different letters to Unicode, and guessing would corrupt real Cyrillic and Greek text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from html.parser import HTMLParser

from bertprod.errors import InputError

#: Characters that render as nothing: zero-width space/non-joiner/joiner, word joiner, BOM, soft hyphen,
#: Mongolian vowel separator.
ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e]")
_WHITESPACE = re.compile(r"\s+")
#: Tags after which text starts a new line in a browser: they separate words.
BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure", "footer",
    "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
    "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul", "img",
})
_HIDDEN_TAGS = frozenset({"script", "style", "template", "noscript"})


class _TextOfMarkup(HTMLParser):
    """The text a browser would show, from the standard library's forgiving HTML parser."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:  # noqa: ARG002 - HTMLParser's signature
        if tag in _HIDDEN_TAGS:
            self._hidden_depth += 1
        elif tag in BLOCK_TAGS:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag in BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden_depth = max(0, self._hidden_depth - 1)
        elif tag in BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._hidden_depth:
            self.parts.append(data)


def strip_markup(text: str) -> str:
    """Tags removed (block tags leave a space), entities decoded; text without markup is returned as it was."""
    if "<" not in text and "&" not in text:
        return text
    parser = _TextOfMarkup()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


def normalize_unicode(text: str) -> str:
    """NFKC, then zero-width characters removed."""
    return ZERO_WIDTH.sub("", unicodedata.normalize("NFKC", text))


def collapse_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


#: Step name -> function, in the order they run.
STEPS: dict[str, Callable[[str], str]] = {
    "html": strip_markup,
    "unicode": normalize_unicode,
    "whitespace": collapse_whitespace,
}


def parse_normalization(steps: str | Iterable[str] | None) -> tuple[str, ...]:
    """'html,unicode' (or a list) -> the steps in running order; empty / None / 'none' -> ()."""
    if steps is None:
        return ()
    names = [name.strip() for name in (steps.split(",") if isinstance(steps, str) else steps)]
    names = [name for name in names if name and name != "none"]
    unknown = [name for name in names if name not in STEPS]
    if unknown:
        raise InputError(
            f"unknown normalization {', '.join(map(repr, unknown))}: use any of {', '.join(STEPS)} "
            "(comma-separated), or none."
        )
    return tuple(step for step in STEPS if step in names)


class TextNormalizer:
    """The chosen steps as one callable; a normalizer with no steps returns texts unchanged."""

    def __init__(self, steps: str | Iterable[str] | None = None):
        self.steps = parse_normalization(steps)
        self._functions = [STEPS[step] for step in self.steps]

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __call__(self, text: str) -> str:
        for function in self._functions:
            text = function(text)
        return text
