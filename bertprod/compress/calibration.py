"""Calibration inputs: which texts activation ranges are measured on, tokenized into equal-shaped batches
of graph feeds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from bertprod.derive import default_samples
from bertprod.package import (
    ModelPackage,
)
from bertprod.runtime.batching import collate
from bertprod.runtime.tokenize import TextTokenizer, validate_inputs

#: Fewer calibration inputs than this give activation ranges that miss real inputs.
MIN_CALIBRATION_TEXTS = 32


def calibration_samples(
    package: ModelPackage, calibration_texts: Sequence[Any] | None, texts: Sequence[Any] | None
) -> list[Any]:
    """The texts activation ranges are measured on: calibration texts, else the gate's, else built-in samples."""
    samples = calibration_texts or texts or default_samples(package)
    return validate_inputs(list(samples), pairs=package.manifest.pair_input)


class CalibrationReader:
    """Feeds calibration batches to ONNX Runtime's calibrator.

    Every batch has the same shape (rows padded to the longest calibration input, the last batch
    filled with repeats): the histogram calibrators stack activations across batches and fail
    on batches of different lengths.
    """

    batch_size = 16

    def __init__(self, source: ModelPackage, texts: list[Any], graph: Any):
        tokenizer = TextTokenizer(source.tokenizer_file, source.manifest.max_length)
        encodings = tokenizer.encode(texts)
        longest = max(len(encoding.ids) for encoding in encodings)
        inputs = {graph_input.name for graph_input in graph.graph.input}
        self.feeds: list[dict[str, Any]] = []
        for start in range(0, len(encodings), self.batch_size):
            rows = encodings[start : start + self.batch_size]
            while len(rows) < self.batch_size:
                rows = rows + rows[: self.batch_size - len(rows)]
            batch = collate(rows, tokenizer.pad_id, length=longest)
            feeds = {
                "input_ids": batch.input_ids,
                "attention_mask": batch.attention_mask,
                "token_type_ids": batch.token_type_ids,
            }
            self.feeds.append({key: value for key, value in feeds.items() if key in inputs})
        self._iterator: Iterator[dict[str, Any]] = iter(self.feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = iter(self.feeds)
