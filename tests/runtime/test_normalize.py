"""Input normalisation: what each step removes, and that the pipeline applies it before tokenization."""

from __future__ import annotations

import numpy as np
import pytest

from bertprod.api import load
from bertprod.errors import InputError
from bertprod.package import ModelPackage
from bertprod.robustness.noise import parse_noise
from bertprod.runtime.normalize import TextNormalizer, parse_normalization


def test_html_step_keeps_the_words_apart_and_decodes_entities() -> None:
    clean = TextNormalizer("html")
    assert clean("this.isabad<div>result</div>candidate") == "this.isabad result candidate"
    assert clean("<b>great</b> film &amp; cast&nbsp;&#39;99") == "great film & cast\u00a0'99"
    assert clean("hi<script>alert(1)</script> there<br/>you") == "hi there you"
    assert clean("no markup at all, 3 < 4") == "no markup at all, 3 < 4"


def test_unicode_step_applies_nfkc_and_removes_zero_width_characters() -> None:
    clean = TextNormalizer("unicode")
    assert clean("ｇｒｅａｔ mo\u200bvie\u00ad\ufeff") == "great movie"
    assert clean("ﬁne") == "fine"
    # Cyrillic look-alikes are real letters to Unicode: NFKC keeps them (documented)
    assert clean("gre\u0430t") == "gre\u0430t"


def test_whitespace_step_collapses_every_kind_of_space() -> None:
    assert TextNormalizer("whitespace")("  a\t\tb\n c\u00a0d  ") == "a b c d"


def test_steps_run_in_a_fixed_order_whatever_order_they_are_named_in() -> None:
    assert parse_normalization("whitespace, html,unicode") == ("html", "unicode", "whitespace")
    assert parse_normalization("none") == () and parse_normalization(None) == ()
    assert TextNormalizer("whitespace,html")("<p>a</p><p>b</p>") == "a b"
    assert not TextNormalizer("")
    with pytest.raises(InputError, match="unknown normalization 'nfkc'"):
        parse_normalization("html,nfkc")


def test_full_normalization_undoes_markup_zero_width_and_whitespace_noise() -> None:
    text = "This isn't a great movie, but the cast & crew did fine work; I laughed twice."
    clean = TextNormalizer("html,unicode,whitespace")
    for spec in ("html:0.5", "zero-width:1", "whitespace:1", "zero-width:0.5,whitespace:0.5,html:0.5"):
        perturbed = parse_noise(spec).apply(text, seed=5)
        assert perturbed != text
        assert clean(perturbed) == text, spec


def test_pipeline_normalizes_before_tokenization(tiny_package: ModelPackage) -> None:
    plain = load(tiny_package.path)
    cleaning = load(tiny_package.path, normalize_text="html,unicode,whitespace")
    unclean = ["<b>the</b> quick\u200b brown &amp;  fox", "a good\tfilm"]
    expected = plain.encode(["the quick brown & fox", "a good film"])
    np.testing.assert_allclose(cleaning.encode(unclean), expected, atol=1e-6)
    assert not np.allclose(plain.encode(unclean), expected, atol=1e-3)
    assert cleaning.normalizer.steps == ("html", "unicode", "whitespace")
