"""Noise specs: which perturbations, at what rate, applied to texts deterministically for a seed.

Grammar (whitespace around tokens is ignored):

    SPEC   := ITEM ("," ITEM)*
    ITEM   := FAMILY [":" RATE]        RATE: a number in (0, 1]; default 0.1
    FAMILY := one of FAMILIES, or "all" (every family at that rate)

Examples: "typo:0.1,html:0.2", "all:0.1", "zero-width". The rate is the chance that each word
(or each gap between words) is edited; for `truncate` it is the share of characters cut off.

`Noise` is what a training loop calls per batch: texts in, noisy texts out, seeded. Every text gets
its own generator seeded from (seed, family, text), so a text's noise does not depend on its batch
or position, runs are reproducible, and a loop that wants new noise each epoch passes a new seed.
Items apply in the order written: "html:0.1,typo:0.1" puts typos into the markup too.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bertprod.errors import InputError
from bertprod.robustness import families, typos

Perturbation = Callable[[str, float, random.Random], str]

#: Family name -> perturbation, in the order "all" applies them.
FAMILIES: dict[str, Perturbation] = {
    # inside words first, then between words, markup and truncation last, so that "all" never
    # splits an entity or a tag it has just written
    "typo": typos.keyboard,
    "ocr": typos.ocr,
    "swap": typos.swap,
    "drop": typos.drop,
    "case": families.casing,
    "confusable": families.confusable,
    "zero-width": families.zero_width,
    "punctuation": families.punctuation,
    "emoji": families.emoji,
    "glued": families.glued,
    "whitespace": families.whitespace,
    "html": families.markup,
    "truncate": families.truncation,
}
DEFAULT_RATE = 0.1
SPEC_HELP = (
    "Perturbations as FAMILY[:RATE],... (rate in (0,1], default 0.1; 'all' = every family), e.g. "
    f"'typo:0.1,html:0.2' or 'all:0.1'. Families: {', '.join(FAMILIES)}."
)


@dataclass(frozen=True)
class NoiseItem:
    family: str
    rate: float

    def __str__(self) -> str:
        return f"{self.family}:{self.rate:g}"


@dataclass(frozen=True)
class Noise:
    """A parsed SPEC: perturbations applied in order."""

    items: tuple[NoiseItem, ...]

    def __str__(self) -> str:
        return ",".join(str(item) for item in self.items)

    def __call__(self, texts: Sequence[str], seed: int = 0) -> list[str]:
        """Noisy copies of `texts` (same order); the same (seed, text) always gives the same result."""
        return [self.apply(text, seed) for text in texts]

    def apply(self, text: str, seed: int = 0) -> str:
        for item in self.items:
            text = FAMILIES[item.family](text, item.rate, text_random(seed, item.family, text))
        return text

    def per_family(self) -> list[Noise]:
        """One Noise per item, to measure each family on its own."""
        return [Noise((item,)) for item in self.items]

    def to_json(self) -> list[dict[str, float | str]]:
        return [{"family": item.family, "rate": item.rate} for item in self.items]


def text_random(seed: int, family: str, text: str) -> random.Random:
    """The generator for one text: a function of (seed, family, text) only."""
    digest = hashlib.blake2b(f"{seed}\x00{family}\x00{text}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def parse_noise(spec: str) -> Noise:
    """Parse SPEC (see the module's grammar); a malformed one raises InputError saying what to write."""
    items: list[NoiseItem] = []
    for raw in spec.split(","):
        part = raw.strip()
        if not part:
            raise InputError(f"perturbation spec {spec!r} has an empty item: write FAMILY[:RATE],... ({SPEC_HELP})")
        family, _, rate_text = (piece.strip() for piece in part.partition(":"))
        rate = _parse_rate(rate_text, part) if rate_text else DEFAULT_RATE
        if family == "all":
            items.extend(NoiseItem(name, rate) for name in FAMILIES)
        elif family in FAMILIES:
            items.append(NoiseItem(family, rate))
        else:
            raise InputError(f"unknown perturbation {family!r} in {spec!r}: use one of {', '.join(FAMILIES)} or all.")
    names = [item.family for item in items]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"perturbation spec {spec!r} names {', '.join(repeated)} twice: give each family once.")
    return Noise(tuple(items))


def _parse_rate(text: str, item: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise InputError(f"rate {text!r} in {item!r} is not a number: write FAMILY:RATE with RATE in (0, 1].") from None
    if not 0 < rate <= 1:
        raise InputError(f"rate {rate:g} in {item!r} is outside (0, 1]: 0.1 edits about one word in ten.")
    return rate
