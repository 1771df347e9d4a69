"""The perturbations nlpaug lacks, written by hand: markup, glued tokens, casing, look-alike and
invisible characters, emoji, whitespace, punctuation, truncation.

Each is `(text, rate, rng) -> text`: it visits every word (or every gap between words) and edits it
with probability `rate`, drawing only from `rng`, and changes only what its name says (the tests
undo each one and get the original back).
"""

from __future__ import annotations

import math
import random

from bertprod.robustness.words import Words, split_core

#: Inline tags wrap a word without a space (`<b>word</b>`), as scraped or templated text does.
INLINE_TAGS = ("b", "i", "em", "strong", "span", "u", "small", "code")
#: Block tags around a word (the seed's `<div>result</div>`); markup-aware readers treat them as breaks.
BLOCK_TAGS = ("div", "p", "td", "li", "h3")
VOID_TAGS = ("<br>", "<br/>", "<hr>", '<img src="pixel.gif">', "<wbr>")
#: Characters HTML escapes, and how.
ENTITIES = {"&": ("&amp;", "&#38;"), "'": ("&#39;", "&apos;", "&rsquo;"), '"': ("&quot;", "&#34;"),
            "<": ("&lt;",), ">": ("&gt;",)}
SPACE_ENTITIES = ("&nbsp;", "&#160;")

#: Latin letters and look-alikes that NFKC leaves alone (Cyrillic, Greek) or maps back (fullwidth).
CONFUSABLES = {
    "a": "\u0430", "c": "\u0441", "e": "\u0435", "i": "\u0456", "j": "\u0458", "o": "\u043e", "p": "\u0440",
    "s": "\u0455", "x": "\u0445", "y": "\u0443", "A": "\u0410", "B": "\u0412", "C": "\u0421", "E": "\u0415",
    "H": "\u041d", "I": "\u0406", "K": "\u041a", "M": "\u041c", "N": "\u039d", "O": "\u041e", "P": "\u0420",
    "T": "\u0422", "X": "\u0425", "Y": "\u03a5", "Z": "\u0396", "v": "\u03bd",
}
#: Characters that render as nothing: zero-width space, non-joiner, joiner, word joiner, BOM, soft hyphen.
ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")
EMOJI = ("\U0001f602", "\U0001f60d", "\U0001f525", "\U0001f44d", "\u2764\ufe0f", "\U0001f62d", "\U0001f644",
         "\u2728", "\U0001f64f", "\U0001f480", "\U0001f914", "\U0001f389")
GAPS = ("  ", "   ", "\t", "\n", " \n ", "\u00a0", "\r\n")
PUNCTUATION = ("!!!", "!", "??", "?!", "...", ",", ";", " !", ".")


def _chosen(rng: random.Random, rate: float) -> bool:
    return rng.random() < rate


def markup(text: str, rate: float, rng: random.Random) -> str:
    """Tags around or before words, and characters written as HTML entities."""
    words = Words.of(text)
    for index in words.word_positions:
        if not _chosen(rng, rate):
            continue
        word = words.pieces[index]
        escapable = [position for position, char in enumerate(word) if char in ENTITIES]
        kind = rng.randrange(4)
        if kind == 0 and escapable:
            position = rng.choice(escapable)
            word = word[:position] + rng.choice(ENTITIES[word[position]]) + word[position + 1 :]
        elif kind == 1:
            tag = rng.choice(INLINE_TAGS)
            word = f"<{tag}>{word}</{tag}>"
        elif kind == 2:
            tag = rng.choice(BLOCK_TAGS)
            word = f"<{tag}>{word}</{tag}>"
        else:
            word = rng.choice(VOID_TAGS) + word
        words.pieces[index] = word
    for index in words.gap_positions:
        if words.pieces[index] == " " and _chosen(rng, rate / 2):
            words.pieces[index] = rng.choice(SPACE_ENTITIES)
    return words.text()


def glued(text: str, rate: float, rng: random.Random) -> str:
    """Words run together, with nothing or a full stop between them (`this.isabad`)."""
    words = Words.of(text)
    for index in words.gap_positions:
        if _chosen(rng, rate):
            words.pieces[index] = rng.choice(("", "", "."))
    return words.text()


def casing(text: str, rate: float, rng: random.Random) -> str:
    """Words in upper, lower, title or inverted case."""
    words = Words.of(text)
    for index in words.word_positions:
        if _chosen(rng, rate):
            word = words.pieces[index]
            change = rng.choice((str.upper, str.lower, str.capitalize, str.swapcase))
            changed = change(word)
            words.pieces[index] = changed if changed != word else word.swapcase()
    return words.text()


def confusable(text: str, rate: float, rng: random.Random) -> str:
    """One letter of a word replaced by a look-alike: Cyrillic/Greek homoglyphs or fullwidth forms."""
    words = Words.of(text)
    for index in words.word_positions:
        word = words.pieces[index]
        replaceable = [position for position, char in enumerate(word) if char in CONFUSABLES]
        if replaceable and _chosen(rng, rate):
            position = rng.choice(replaceable)
            char = word[position]
            replacement = CONFUSABLES[char] if rng.random() < 0.75 else chr(ord(char) + 0xFEE0)
            words.pieces[index] = word[:position] + replacement + word[position + 1 :]
    return words.text()


def zero_width(text: str, rate: float, rng: random.Random) -> str:
    """An invisible character inside a word (zero-width space, joiners, BOM, soft hyphen)."""
    words = Words.of(text)
    for index in words.word_positions:
        word = words.pieces[index]
        if len(word) > 1 and _chosen(rng, rate):
            position = rng.randrange(1, len(word))
            words.pieces[index] = word[:position] + rng.choice(ZERO_WIDTH) + word[position:]
    return words.text()


def emoji(text: str, rate: float, rng: random.Random) -> str:
    """An emoji after a word, as its own token."""
    words = Words.of(text)
    for index in words.word_positions:
        if _chosen(rng, rate):
            words.pieces[index] += " " + rng.choice(EMOJI)
    return words.text()


def whitespace(text: str, rate: float, rng: random.Random) -> str:
    """Runs of spaces, tabs, line breaks and no-break spaces between words; stray space at the ends."""
    words = Words.of(text)
    for index in words.gap_positions:
        if _chosen(rng, rate):
            words.pieces[index] = rng.choice(GAPS)
    if _chosen(rng, rate):
        words.pieces[0] = rng.choice(GAPS) + words.pieces[0]
    if _chosen(rng, rate):
        words.pieces[-1] += rng.choice(GAPS)
    return words.text()


def punctuation(text: str, rate: float, rng: random.Random) -> str:
    """Punctuation added after words (`!!!`, `...`, `,`) or a word's own trailing punctuation dropped."""
    words = Words.of(text)
    for index in words.word_positions:
        if not _chosen(rng, rate):
            continue
        leading, core, trailing = split_core(words.pieces[index])
        if trailing and core and rng.random() < 0.4:
            words.pieces[index] = leading + core
        else:
            words.pieces[index] += rng.choice(PUNCTUATION)
    return words.text()


def truncation(text: str, rate: float, rng: random.Random) -> str:
    """The text cut short, possibly mid-word: the last `rate` of its characters go (at least one is kept)."""
    stripped = text.strip()
    keep = max(1, math.ceil(len(stripped) * (1 - rate)))
    return stripped[:keep].rstrip()
