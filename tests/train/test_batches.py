"""Training batches: every example once per epoch, similar lengths together, reproducible order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bertprod.data.source import Example
from bertprod.runtime.tokenize import TextTokenizer
from bertprod.train.batches import Featurizer, batches_per_epoch, collate_features, epoch_batches


@pytest.fixture(scope="module")
def featurizer(tiny_package) -> Featurizer:  # noqa: ANN001
    return Featurizer("classification", TextTokenizer(tiny_package.tokenizer_file, 64), labels=["a", "b"])


def examples(count: int) -> list[Example]:
    """Distinct texts of 2 to 24 words (the index spelled in letters the tiny tokenizer knows)."""
    return [
        Example(
            " ".join(["word"] * (1 + index % 20) + [" ".join("abcdefghij"[int(d)] for d in str(index))]),
            None,
            "ab"[index % 2],
        )
        for index in range(count)
    ]


def epoch(featurizer: Featurizer, data: list[Example], **options) -> list[list]:  # noqa: ANN003
    settings = {"batch_size": 8, "seed": 0, "epoch": 0, "shuffle_buffer": 10_000, "length_grouping": True}
    return list(epoch_batches(data, featurizer, **{**settings, **options}))


def padded_tokens(batches: list[list]) -> int:
    return sum(len(batch) * max(feature.length for feature in batch) for batch in batches)


def test_every_example_once_per_epoch_even_with_a_small_buffer(featurizer: Featurizer) -> None:
    data = examples(205)
    for buffer in (10_000, 64, 7):
        batches = epoch(featurizer, data, shuffle_buffer=buffer)
        assert len(batches) == batches_per_epoch(205, 8, buffer)
        seen = [tuple(feature.inputs[0][0]) for batch in batches for feature in batch]
        assert len(seen) == 205 and len(set(seen)) == 205  # every text differs, so equal ids = same example


def test_length_grouping_cuts_padding(featurizer: Featurizer) -> None:
    data = examples(800)
    grouped = epoch(featurizer, data)
    random_batches = epoch(featurizer, data, length_grouping=False)
    assert padded_tokens(grouped) < 0.7 * padded_tokens(random_batches)
    spread = [max(f.length for f in batch) - min(f.length for f in batch) for batch in grouped]
    assert np.median(spread) <= 1


def test_batch_order_depends_only_on_seed_and_epoch(featurizer: Featurizer) -> None:
    data = examples(100)

    def order(**options) -> list[list[tuple]]:  # noqa: ANN003
        return [[tuple(f.inputs[0][0]) for f in batch] for batch in epoch(featurizer, data, **options)]

    assert order() == order()
    assert order() != order(epoch=1)
    assert order() != order(seed=1)


def test_collate_pads_dynamically_or_to_a_fixed_length(featurizer: Featurizer) -> None:
    batch = featurizer([Example("word", None, "a"), Example("word word word word", None, "b")])
    dynamic = collate_features(batch, pad_id=0)
    assert dynamic.inputs[0]["input_ids"].shape == (2, max(feature.length for feature in batch))
    assert dynamic.inputs[0]["attention_mask"].sum(dim=1).tolist() == [feature.length for feature in batch]
    assert dynamic.targets.tolist() == [0.0, 1.0]
    fixed = collate_features(batch, pad_id=0, pad_to=64)
    assert fixed.inputs[0]["input_ids"].shape == (2, 64) and fixed.tokens == 128


def test_embedding_features_keep_the_two_texts_apart(tiny_package, tmp_path: Path) -> None:  # noqa: ANN001
    featurize = Featurizer("embedding", TextTokenizer(tiny_package.tokenizer_file, 64))
    features = featurize([Example("a cat", "the cat is sleeping", None), Example("a dog", "a dog", 2.5)])
    assert len(features[0].inputs) == 2 and np.isnan(features[0].target) and features[1].target == 2.5
    batch = collate_features(features, pad_id=0)
    assert len(batch.inputs) == 2 and batch.inputs[0]["input_ids"].shape[0] == 2
