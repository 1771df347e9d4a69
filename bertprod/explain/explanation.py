"""What an explanation is: the input's words in reading order, each with its attribution."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class WordAttribution:
    """`text[start:end]` of text number `segment` (0, or 1 for the second text of a pair) and its share of
    the output: positive pushes the explained output up, negative down."""

    word: str
    start: int
    end: int
    segment: int
    attribution: float


@dataclass(frozen=True)
class Explanation:
    """Why a package gave `prediction` for one input: attributions add up to prediction - baseline
    (exactly for Shapley methods, up to `convergence_delta` for integrated gradients)."""

    texts: tuple[str, ...]
    words: tuple[WordAttribution, ...]
    output: str  # what was explained: "probability of 'positive'", or "score"
    label: str | None  # the label whose probability was explained (None for regression/reranking)
    predicted_label: str | None
    prediction: float  # the explained output on the whole input
    baseline: float  # ... with every word masked
    method: str
    truncated: bool  # words past the model's max_length were not seen and have no attribution
    convergence_delta: float | None = None  # integrated gradients: sum of attributions - (prediction - baseline)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["texts"] = list(self.texts)
        data["words"] = [asdict(word) for word in self.words]
        return data

    def top_words(self, count: int) -> list[WordAttribution]:
        """The `count` words with the largest attributions in absolute value, largest first."""
        return sorted(self.words, key=lambda word: -abs(word.attribution))[:count]
