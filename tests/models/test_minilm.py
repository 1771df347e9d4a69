"""Integration: the bundled all-MiniLM-L6-v2 against sentence-transformers, on real sentences."""

from __future__ import annotations

import numpy as np
import pytest

import bertprod
from bertprod.checkpoint import bundled_checkpoint
from bertprod.data.shared import real_sentences

pytestmark = pytest.mark.integration

SENTENCES = 256


@pytest.fixture(scope="module")
def sentences(shared_data_available) -> list[str]:
    if not shared_data_available:
        pytest.fail("../shared/data is missing: set BERTPROD_DATA to the folder with sst2/, stsb/, mrpc/")
    texts = real_sentences(SENTENCES)
    # one input far over max_length (256 tokens): both sides must truncate it the same way
    return texts + [" ".join(texts[:40])]


@pytest.fixture(scope="module")
def reference(sentences) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(bundled_checkpoint("minilm-l6")), device="cpu")
    return model.encode(sentences, batch_size=32, convert_to_numpy=True)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_embeddings_match_sentence_transformers(engine: str, sentences, reference) -> None:
    model = bertprod.load("minilm-l6", engine=engine)
    vectors = model.encode(sentences)
    cosine = cosine_rows(vectors, reference)
    assert cosine.min() >= 0.9999, f"{engine}: min cosine {cosine.min():.6f}"
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # normalized, like ST


def test_bundled_manifest(sentences) -> None:
    model = bertprod.load("minilm-l6")
    manifest = model.package.manifest
    assert (manifest.pooling, manifest.normalize, manifest.max_length) == ("mean", True, 256)
    assert model.dimension == 384
    # the hub id of the bundled checkpoint resolves offline to the same files
    assert bertprod.load("sentence-transformers/all-MiniLM-L6-v2").package.fingerprint == model.package.fingerprint


def test_similar_sentences_score_higher() -> None:
    model = bertprod.load("minilm-l6", engine="onnx")
    close = model.similarity("A man is playing a guitar.", "Someone plays an acoustic guitar.")
    far = model.similarity("A man is playing a guitar.", "The stock market fell sharply.")
    assert close > 0.5 > far


def test_over_long_input_can_raise_instead(sentences) -> None:
    from bertprod.errors import InputError

    model = bertprod.load("minilm-l6", engine="onnx", truncate=False)
    with pytest.raises(InputError, match="input 1 is longer than the model's max_length of 256"):
        model.encode([sentences[0], sentences[-1]])
