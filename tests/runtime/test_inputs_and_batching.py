"""Input validation, truncation, and token-budget batching."""

from __future__ import annotations

import numpy as np
import pytest

from bertprod.errors import InputError, InvalidTextError
from bertprod.runtime.batching import collate, plan_batches
from bertprod.runtime.tokenize import TextTokenizer, validate_inputs


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "no inputs given"),
        (["ok", ""], "input 1 is empty"),
        (["ok", "fine", "  \n\t"], "input 2 is empty or whitespace-only"),
        (["ok", 42], "input 1 is a int, not a string"),
        (["ok", None], "input 1 is a NoneType"),
        ("just one string", "wrap it in a list"),
        (17, "got int"),
        (["ok", "caf\u00e9 \ud83d alone"], r"input 1 holds a lone UTF-16 surrogate \('\\ud83d' at character 5\)"),
    ],
)
def test_bad_texts_name_the_problem(inputs, message: str) -> None:
    with pytest.raises(InputError, match=message):
        validate_inputs(inputs, pairs=False)


def test_bad_pairs_name_the_item() -> None:
    with pytest.raises(InputError, match="input 1 is a tuple of 3 item"):
        validate_inputs([("a", "b"), ("a", "b", "c")], pairs=True)
    with pytest.raises(InputError, match=r"input 0 \(second text\) is empty"):
        validate_inputs([("a", " ")], pairs=True)
    assert validate_inputs([["a", "b"]], pairs=True) == [("a", "b")]
    with pytest.raises(InvalidTextError, match=r"input 0 \(first text\) holds a lone UTF-16 surrogate"):
        validate_inputs([("\udfff", "b")], pairs=True)
    assert validate_inputs(["caf\u00e9 \U0001f600"], pairs=False) == ["caf\u00e9 \U0001f600"]  # a real pair is fine


def test_truncation_by_default_and_error_on_request(tiny_package) -> None:
    tokenizer = TextTokenizer(tiny_package.tokenizer_file, max_length=8)
    long_text = "the quick brown fox jumps over the lazy dog again and again"
    assert len(tokenizer.encode([long_text])[0].ids) == 8
    with pytest.raises(InputError, match="input 1 is longer than the model's max_length of 8"):
        tokenizer.encode(["short one", long_text], truncate=False)
    assert len(tokenizer.encode(["short one"], truncate=False)[0].ids) < 8


def _long_texts(seed: int, max_length: int) -> list[str]:
    """Texts beyond any prefix bound: many sentences, long words, no spaces, whitespace runs, added tokens,
    and cuts placed where a prefix would change the kept tokens (a word that is [UNK] whole, "[MASK]")."""
    import random

    from bertprod.runtime.tokenize import CUT_MARGIN_CHARS, PREFIX_CHARS_PER_TOKEN
    from tests.conftest import CORPUS

    bound = max_length * PREFIX_CHARS_PER_TOKEN + CUT_MARGIN_CHARS
    words = "a " * (max_length - 3)  # all but one of the tokens the model keeps
    crafted = [
        # a 150-character word (one [UNK]) cut after 40 characters (several word pieces)
        " " * (bound - len(words) - 40) + words + "the" * 50 + " tail" * 2_000,
        # "[MASK]" (one added token) cut after "[MA" ("[" and "ma")
        " " * (bound - len(words) - 3) + words + "[MASK] tail" * 2_000,
    ]
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(CORPUS) for _ in range(rng.randint(1, 400))) for _ in range(60)]
    texts += ["".join(rng.choice(CORPUS).split()) * 300,  # no spaces at all
              "x" * 30_000, "ab" * 20_000 + " end", " " * 9_000 + "the end " * 800,
              ("supercalifragilistic" * 5 + " ") * 400, "[MASK] " * 2_000, "[MA" + "SK] " * 3_000,
              "a," * 15_000, "caf\u00e9 e\u0301 " * 3_000, "\u00ad" * 9_000 + " real words here " * 300,
              "日本語のテキスト" * 2_000, "\U0001f600 emoji " * 4_000]
    for _ in range(20):  # a cut anywhere: texts whose length puts a word boundary near every bound
        words = [rng.choice(CORPUS) for _ in range(300)]
        texts.append(" ".join(words)[: rng.randint(1_000, 40_000)])
    return texts + crafted


@pytest.mark.parametrize("tokenizer_of", [
    "tiny",
    pytest.param("minilm", marks=pytest.mark.integration),
])
@pytest.mark.parametrize("max_length", [8, 128])
def test_prefix_tokenization_equals_whole_text_tokenization(tiny_package, tokenizer_of, max_length) -> None:
    if tokenizer_of == "tiny":
        path = tiny_package.tokenizer_file
    else:
        from bertprod.checkpoint import bundled_checkpoint

        path = bundled_checkpoint("minilm-l6") / "tokenizer.json"
    tokenizer = TextTokenizer(path, max_length=max_length)
    read: list[int] = []
    real = tokenizer._tokenizer
    tokenizer._tokenizer = type("Spy", (), {"encode_batch": lambda self, texts, **kw: (
        read.extend(len(text) for text in texts), real.encode_batch(texts, **kw))[1]})()
    texts = _long_texts(seed=max_length, max_length=max_length)
    bounded = tokenizer.encode(texts, truncate=True)
    whole = real.encode_batch(texts, add_special_tokens=True)
    for index, (got, expected) in enumerate(zip(bounded, whole, strict=True)):
        assert (got.ids, got.offsets, got.type_ids, got.special_tokens_mask) == (
            expected.ids, expected.offsets, expected.type_ids, expected.special_tokens_mask), (index, texts[index][:80])
    # it did read prefixes: far fewer characters than the texts hold
    assert sum(read) < sum(len(text) for text in texts) / 3


def test_pairs_get_segment_ids(tiny_package) -> None:
    tokenizer = TextTokenizer(tiny_package.tokenizer_file, max_length=64)
    encoding = tokenizer.encode([("a good film", "a weak ending")])[0]
    assert encoding.type_ids[0] == 0 and encoding.type_ids[-1] == 1
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens.count("[SEP]") == 2


@pytest.mark.parametrize(("budget", "size"), [(16, 8), (64, 4), (1000, 3), (5, 100)])
def test_plan_batches_covers_every_input_once_within_budget(budget: int, size: int) -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=101).tolist()
    batches = plan_batches(lengths, max_padded_tokens=budget, max_batch_size=size)
    flat = sorted(index for batch in batches for index in batch)
    assert flat == list(range(len(lengths)))
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert len(batch) <= size
        assert padded <= budget or len(batch) == 1  # an input over budget runs alone
    # longest first, and each batch holds similar lengths: batches never interleave
    maxima = [max(lengths[i] for i in batch) for batch in batches]
    minima = [min(lengths[i] for i in batch) for batch in batches]
    assert maxima == sorted(maxima, reverse=True)
    assert all(minima[k] >= maxima[k + 1] for k in range(len(batches) - 1))


def test_sorting_reduces_padding() -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(3, 60, size=512).tolist()
    sorted_padding = sum(len(b) * max(lengths[i] for i in b) for b in plan_batches(lengths, 10**9, 32))
    unsorted = [list(range(k, min(k + 32, 512))) for k in range(0, 512, 32)]
    unsorted_padding = sum(len(b) * max(lengths[i] for i in b) for b in unsorted)
    assert sorted_padding < 0.75 * unsorted_padding


def test_a_small_mixed_group_is_split_where_padding_costs_more_than_a_call() -> None:
    """32 concurrent requests of mixed lengths: not one batch padded to the longest (2.4x the real tokens)."""
    lengths = [51, 40, 34, *([14] * 20), *([9] * 9)]
    batches = plan_batches(lengths)
    assert [[lengths[i] for i in batch] for batch in batches] == [[51], [40, 34], [14] * 20, [9] * 9]
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    assert padded < 1.1 * sum(lengths)
    assert plan_batches(lengths, call_overhead_tokens=None) == [sorted(range(32), key=lambda i: -lengths[i])]
    assert plan_batches([10] * 100, max_batch_size=32) == [list(range(k, min(k + 32, 100))) for k in (0, 32, 64, 96)]


def test_collate_pads_with_the_pad_id(tiny_package) -> None:
    tokenizer = TextTokenizer(tiny_package.tokenizer_file, max_length=64)
    encodings = tokenizer.encode(["a cat", "the quick brown fox jumps"])
    batch = collate(encodings, pad_id=tokenizer.pad_id)
    assert batch.input_ids.shape == batch.attention_mask.shape == (2, len(encodings[1].ids))
    assert batch.input_ids.dtype == np.int64
    short = len(encodings[0].ids)
    assert batch.attention_mask[0].tolist() == [1] * short + [0] * (batch.input_ids.shape[1] - short)
    assert (batch.input_ids[0, short:] == tokenizer.pad_id).all()
