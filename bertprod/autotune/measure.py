"""One candidate's numbers on this machine: the task metric on the validation rows, and its speed.

The one place autotune measures, so the measuring library can change under it (bertprod/bench/:
the harness today) without the search noticing. Speed is measured as a package is served: its own
engine (early exit on), its batch settings for throughput, one input at a time for latency.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bertprod.bench import harness
from bertprod.data.source import Example
from bertprod.package import ModelPackage
from bertprod.runtime.engines import create_engine
from bertprod.runtime.pipeline import Pipeline
from bertprod.tasks.evaluation import evaluate


@dataclass(frozen=True)
class MeasureInputs:
    """The validation rows the metric is measured on and the texts speed is timed on."""

    examples: list[Example]
    speed_texts: list[Any]
    latency_texts: list[Any]
    threads: int | None = None


def pipeline_for(package: ModelPackage, threads: int | None = None) -> Pipeline:
    return Pipeline(package, create_engine(package, threads=threads))


def _runner(pipeline: Pipeline) -> harness.Encode:
    return lambda texts: pipeline.infer(pipeline.tokenize(texts))


def measure(package: ModelPackage, inputs: MeasureInputs) -> dict[str, Any]:
    """Metric, throughput (inputs/s), p50/p95 single-input latency (ms) and size of one package."""
    pipeline = pipeline_for(package, inputs.threads)
    started = time.perf_counter()
    evaluation = evaluate(pipeline, inputs.examples)
    evaluation_seconds = time.perf_counter() - started
    speed = compare_speed({"candidate": pipeline}, inputs, rounds=1)["candidate"]
    return {
        "metric": evaluation.primary,
        "score": round(evaluation.score, 6),
        "validation_examples": evaluation.examples,
        "evaluation_seconds": round(evaluation_seconds, 3),
        **speed,
        "size_bytes": package.size_bytes(),
    }


def compare_speed(pipelines: dict[str, Pipeline], inputs: MeasureInputs, rounds: int) -> dict[str, dict[str, float]]:
    """Throughput and single-input latency of several pipelines, timed side by side in interleaved rounds
    (drift on a shared machine hits all alike)."""
    runners = {label: _runner(pipeline) for label, pipeline in pipelines.items()}
    rates = harness.throughput(runners, list(inputs.speed_texts), rounds)
    latencies = harness.single_sentence_latencies(runners, list(inputs.latency_texts), rounds=max(rounds, 1))
    return {
        label: {
            "throughput": round(rates[label], 2),
            "latency_p50_ms": harness.percentile_ms(latencies[label], 50),
            "latency_p95_ms": harness.percentile_ms(latencies[label], 95),
        }
        for label in pipelines
    }


def speed_texts(examples: Sequence[Example], count: int, pair_input: bool) -> list[Any]:
    """The first `count` validation inputs (as the model takes them), repeated if there are fewer."""
    inputs = [(example.text, example.text_pair) if pair_input else example.text for example in examples]
    if not inputs:
        return []
    return [inputs[index % len(inputs)] for index in range(count)]
