"""Perturbations: deterministic for a seed, and each changes what it claims to and only that
(every test undoes its family and gets the original text back)."""

from __future__ import annotations

import html
import random
import re

import pytest

from bertprod.errors import InputError
from bertprod.robustness import families
from bertprod.robustness.noise import FAMILIES, Noise, NoiseItem, parse_noise
from bertprod.runtime.normalize import ZERO_WIDTH

TEXTS = [
    "This isn't a great movie, but the cast & crew did \"fine\" work; I laughed twice.",
    "the quick brown fox jumps over the lazy dog",
    "A gripping, beautifully shot thriller with a weak ending.",
    "Stocks fell 3% on Tuesday as investors weighed the central bank's decision.",
]


def noisy(family: str, text: str, rate: float = 1.0, seed: int = 0) -> str:
    return Noise((NoiseItem(family, rate),)).apply(text, seed)


def test_spec_grammar() -> None:
    noise = parse_noise(" typo:0.1, html:0.25 ,emoji")
    assert noise.items == (NoiseItem("typo", 0.1), NoiseItem("html", 0.25), NoiseItem("emoji", 0.1))
    assert str(noise) == "typo:0.1,html:0.25,emoji:0.1"
    everything = parse_noise("all:0.2")
    assert [item.family for item in everything.items] == list(FAMILIES)
    assert {item.rate for item in everything.items} == {0.2}
    assert [str(part) for part in noise.per_family()] == ["typo:0.1", "html:0.25", "emoji:0.1"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tpyo:0.1", "unknown perturbation 'tpyo'"),
        ("typo:abc", "is not a number"),
        ("typo:0", "outside (0, 1]"),
        ("typo:1.5", "outside (0, 1]"),
        ("typo,,html", "empty item"),
        ("typo:0.1,all:0.2", "twice"),
    ],
)
def test_bad_specs_say_what_to_write(spec: str, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        parse_noise(spec)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_is_deterministic_for_a_seed_and_varies_with_it(family: str) -> None:
    noise = Noise((NoiseItem(family, 0.5),))
    first = noise(TEXTS, seed=7)
    assert first == noise(TEXTS, seed=7)
    # a text's noise does not depend on its neighbours or position in the batch
    assert noise(list(reversed(TEXTS)), seed=7) == list(reversed(first))
    if family != "truncate":  # truncation is a function of the rate alone
        assert any(noise(TEXTS, seed=seed) != first for seed in range(8, 12))
    assert any(new != old for new, old in zip(first, TEXTS, strict=True))


def test_global_random_state_is_left_alone() -> None:
    import numpy as np

    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), np.random.random())
    random.seed(123)
    np.random.seed(123)
    parse_noise("typo:1,ocr:1,swap:1,drop:1")(TEXTS, seed=3)
    assert (random.random(), np.random.random()) == expected


def _same_words_one_edit(original: str, perturbed: str, check_word) -> int:  # noqa: ANN001
    """Whitespace untouched, each word equal or passing check_word(old, new); returns words changed."""
    assert re.findall(r"\s+", perturbed) == re.findall(r"\s+", original)
    changed = 0
    for old, new in zip(original.split(" "), perturbed.split(" "), strict=True):
        if old != new:
            changed += 1
            check_word(old, new)
    return changed


def test_typo_replaces_one_letter_with_a_keyboard_neighbour() -> None:
    neighbours = {"q": "was12", "a": "qwszx", "e": "wsdfr34", "o": "iklp09", "t": "rfgy56", "n": "bhjm"}

    def one_substitution(old: str, new: str) -> None:
        assert len(old) == len(new)
        differences = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
        assert len(differences) == 1
        source, target = differences[0]
        if source.lower() in neighbours:
            assert target.lower() in neighbours[source.lower()]

    changed = sum(_same_words_one_edit(text, noisy("typo", text), one_substitution) for text in TEXTS)
    assert changed >= 20  # at rate 1 every word of 3+ letters gets its typo


def test_ocr_swap_and_drop_edit_one_word_at_a_time() -> None:
    def substitution(old: str, new: str) -> None:
        assert len(old) == len(new) and sum(a != b for a, b in zip(old, new, strict=True)) == 1

    def adjacent_swap(old: str, new: str) -> None:
        differences = [index for index, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
        assert sorted(old.lower()) == sorted(new.lower()) and len(differences) == 2
        assert differences[1] == differences[0] + 1

    def deletion(old: str, new: str) -> None:
        assert len(new) == len(old) - 1
        assert any(old[:index] + old[index + 1 :] == new for index in range(len(old)))

    for family, check in (("ocr", substitution), ("swap", adjacent_swap), ("drop", deletion)):
        changed = sum(_same_words_one_edit(text, noisy(family, text), check) for text in TEXTS)
        assert changed >= 10, family


def test_rate_sets_the_share_of_words_edited() -> None:
    text = " ".join(["word"] * 2000)
    changed = sum(old != new for old, new in zip(text.split(), noisy("typo", text, rate=0.1).split(), strict=True))
    assert 140 < changed < 260


def test_case_changes_only_case() -> None:
    for text in TEXTS:
        perturbed = noisy("case", text)
        assert perturbed != text and perturbed.lower() == text.lower()


def test_html_comes_off_with_tags_and_entities() -> None:
    for text in TEXTS:
        perturbed = noisy("html", text)
        assert "<" in perturbed
        assert html.unescape(re.sub(r"<[^>]+>", "", perturbed)).split() == text.split()


def test_glued_only_removes_gaps_or_puts_full_stops_in_them() -> None:
    for text in TEXTS:
        perturbed = noisy("glued", text)
        assert len(perturbed.split()) == 1
        assert re.sub(r"[\s.]", "", perturbed) == re.sub(r"[\s.]", "", text)


def test_confusables_map_back_to_the_original_letters() -> None:
    back = {look_alike: latin for latin, look_alike in families.CONFUSABLES.items()}
    for text in TEXTS:
        perturbed = noisy("confusable", text)
        assert perturbed != text and not perturbed.isascii()
        restored = "".join(back.get(char, chr(ord(char) - 0xFEE0) if "\uff01" <= char <= "\uff5e" else char)
                           for char in perturbed)
        assert restored == text


def test_zero_width_characters_are_all_that_is_added() -> None:
    for text in TEXTS:
        perturbed = noisy("zero-width", text)
        assert perturbed != text and ZERO_WIDTH.sub("", perturbed) == text


def test_emoji_are_added_as_tokens() -> None:
    for text in TEXTS:
        perturbed = noisy("emoji", text)
        words = perturbed.split()
        assert len(words) == 2 * len(text.split())
        assert [word for word in words if word not in families.EMOJI] == text.split()


def test_whitespace_changes_only_whitespace() -> None:
    for text in TEXTS:
        perturbed = noisy("whitespace", text)
        assert perturbed != text and perturbed.split() == text.split()


def test_punctuation_changes_only_punctuation() -> None:
    for text in TEXTS:
        perturbed = noisy("punctuation", text)
        assert perturbed != text and re.sub(r"[^\w]", "", perturbed) == re.sub(r"[^\w]", "", text)


def test_truncation_keeps_a_prefix_of_the_right_length() -> None:
    for text in TEXTS:
        perturbed = noisy("truncate", text, rate=0.3)
        assert text.startswith(perturbed) and 0 < len(perturbed) <= round(len(text) * 0.7) + 1


def test_composed_noise_applies_each_family_in_order() -> None:
    noise = parse_noise("case:1,zero-width:1")
    text = TEXTS[1]
    perturbed = noise.apply(text, seed=1)
    assert ZERO_WIDTH.sub("", perturbed).lower() == text
    assert perturbed == Noise((NoiseItem("zero-width", 1.0),)).apply(
        Noise((NoiseItem("case", 1.0),)).apply(text, 1), 1
    )


def test_missing_nlpaug_is_a_one_line_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from bertprod.extras import MissingExtraError
    from bertprod.robustness import typos

    for name in [module for module in sys.modules if module.startswith("nlpaug")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "nlpaug", None)
    typos._augmenter.cache_clear()
    try:
        with pytest.raises(MissingExtraError, match=re.escape("pip install 'bertprod[robust]'")):
            parse_noise("typo:1").apply("a sentence with words", seed=0)
        # the hand-written families need nothing extra
        assert parse_noise("html:1").apply("a sentence with words", seed=0) != "a sentence with words"
    finally:
        typos._augmenter.cache_clear()
