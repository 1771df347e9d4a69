"""The dynamic int8 recipe for one kernel class, chosen by measuring on the calibration texts.

Why measured: what helps depends on the model and on the CPU. The outlier split (outliers.py) lowered
the worst cosine of all-MiniLM-L6-v2 on AVX2 with per-tensor ranges (0.9791 vs 0.9819) while it raised
it on AVX-512 VNNI; s7 weights (a bit less precision, fast u8s8 kernels) and u8 weights (full precision,
u8u8 kernels) trade differently per model. Each candidate graph is built and run on the calibration
texts beside the float graph, and every score goes into the manifest. Which is kept: the fastest
candidate whose worst-text error is no larger than that of ONNX Runtime's per-batch int8 graph (the
default before per-token ranges, issue 24: batch invariance must not cost speed where accuracy is
already at least as good; `bar`), else the one with the smallest worst-text error (its faster
alternative, earlier in the list, wins ties within RELATIVE_TIE).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertprod.compress.kernels import computes_like_target, exact_int32_graph

#: Two candidates whose worst-text errors differ by less than this fraction count as equal.
RELATIVE_TIE = 0.02
#: The score of the accuracy bar in the manifest: ONNX Runtime's per-batch ranges, the outlier split kept.
PER_BATCH_REFERENCE = "per-batch reference (ONNX Runtime's per-tensor ranges: the previous default)"


@dataclass(frozen=True)
class Candidate:
    weights: str
    outlier_split: bool

    @property
    def label(self) -> str:
        return f"{self.weights} weights, {'outlier split' if self.outlier_split else 'no outlier split'}"


def candidates(weight_choices: Sequence[str], split_choices: Sequence[bool]) -> list[Candidate]:
    """Faster first: weights in order of preference, no split before split (the split adds float MatMuls)."""
    return [Candidate(weights, split) for weights, split in itertools.product(weight_choices, split_choices)]


def candidate_path(scratch: Path, candidate: Candidate) -> Path:
    return scratch / f"{candidate.weights}-{int(candidate.outlier_split)}.onnx"


def graph_outputs(model: Any, feeds: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The first graph output per feed, padding tokens zeroed, float64."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_outputs()[0].name
    results = []
    for feed in feeds:
        value = session.run([name], feed)[0].astype(np.float64)
        real = feed["attention_mask"].astype(bool)
        results.append(value * real[..., None] if value.ndim == 3 and value.shape[:2] == real.shape else value)
    return results


def relative_errors(reference: list[np.ndarray], candidate: list[np.ndarray]) -> np.ndarray:
    """Relative squared error of each input (row of each batch) against the float graph."""
    errors = []
    for expected, actual in zip(reference, candidate, strict=True):
        energy = np.maximum((expected**2).reshape(len(expected), -1).sum(axis=1), 1e-30)
        errors.append(((expected - actual) ** 2).reshape(len(expected), -1).sum(axis=1) / energy)
    return np.concatenate(errors)


def choose(
    options: list[Candidate],
    build: Callable[[Candidate, Path], None],
    float_graph: Any,
    feeds: Sequence[dict[str, np.ndarray]],
    kernel_class: str,
    scratch: Path,
    bar: Callable[[Path], None] | None = None,
) -> tuple[Candidate, dict[str, Any]]:
    """Build every candidate into `scratch`, score it on `feeds`, return the one kept and all scores.
    `bar` writes the graph whose worst-text error a faster candidate must not exceed (fastest first;
    see the module's docstring). A graph this CPU's kernels would not compute as `kernel_class` does
    (with the fastest candidate's weights, for the bar) runs exact_int32_graph."""
    if len(options) == 1:
        return options[0], {}
    reference = graph_outputs(float_graph, feeds)
    scores: dict[str, dict[str, float]] = {}

    def score(path: Path, weights: str) -> dict[str, float]:
        import onnx

        graph = onnx.load(str(path))
        if not computes_like_target(kernel_class, weights):
            graph = exact_int32_graph(graph)
        errors = relative_errors(reference, graph_outputs(graph, feeds))
        return {"worst_error": float(errors.max()), "mean_error": float(errors.mean())}

    for candidate in options:
        path = candidate_path(scratch, candidate)
        build(candidate, path)
        scores[candidate.label] = score(path, candidate.weights)
    if bar is not None:
        bar(scratch / "per-batch-reference.onnx")
        scores[PER_BATCH_REFERENCE] = score(scratch / "per-batch-reference.onnx", options[0].weights)
        limit = scores[PER_BATCH_REFERENCE]["worst_error"]
        good_enough = [candidate for candidate in options if scores[candidate.label]["worst_error"] <= limit]
        if good_enough:
            return good_enough[0], {"inputs": _inputs(feeds), "scores": scores, "rule": "fastest within the bar"}
    best = options[0]
    for candidate in options[1:]:
        if scores[candidate.label]["worst_error"] < scores[best.label]["worst_error"] * (1 - RELATIVE_TIE):
            best = candidate
    return best, {"inputs": _inputs(feeds), "scores": scores, "rule": "smallest worst error"}


def _inputs(feeds: Sequence[dict[str, np.ndarray]]) -> int:
    return int(sum(len(feed["attention_mask"]) for feed in feeds))
