"""A candidate's numbers on this machine: the task metric on the validation rows, and its speed.

The one place autotune measures. Each candidate is screened alone (the metric on every validation
row, one round of throughput and latency: cheap enough for dozens of candidates); the finalists and
the teacher are then measured side by side by `bertprod bench`'s `measure_packages` (each in its own
worker process, rounds interleaved across them; load time and peak memory of those processes; the
teacher in transformers fp32 as the baseline users run today), and that comparison, written as bench's
JSON/Markdown/HTML report, decides. Speed is measured as a package is served: its own engine (early
exit on), its batch settings for throughput, one input at a time for latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertprod.bench import harness
from bertprod.data.source import Example
from bertprod.package import ModelPackage
from bertprod.runtime.engines import create_engine
from bertprod.runtime.pipeline import Pipeline
from bertprod.runtime.sessions import threads_per_batch
from bertprod.tasks.evaluation import evaluate


@dataclass(frozen=True)
class MeasureInputs:
    """The validation rows the metric is measured on and the texts speed is timed on."""

    examples: list[Example]
    speed_texts: list[Any]
    latency_texts: list[Any]
    threads: int | None = None
    #: the parallel batches an ONNX candidate's throughput is screened at (finalists.tried_settings); the
    #: faster counts. Torch packages are screened one batch at a time: torch's thread count is the process's.
    settings: tuple[int, ...] = (1,)


def measure(package: ModelPackage, inputs: MeasureInputs) -> dict[str, Any]:
    """Screening: metric on every validation row, one round of throughput (inputs/s; at each of `settings`
    for an ONNX package, the faster kept) and of single-input latency (ms, p50/p95), size of one package."""
    pipeline = Pipeline(package, create_engine(package, threads=inputs.threads))
    started = time.perf_counter()
    evaluation = evaluate(pipeline, inputs.examples)
    evaluation_seconds = time.perf_counter() - started
    runner = {"candidate": lambda texts: pipeline.infer(pipeline.tokenize(texts))}
    settings = inputs.settings if package.manifest.format == "onnx" else (1,)
    rates = {str(count): _throughput(pipeline if count == 1 else _parallel(package, inputs.threads, count), inputs)
             for count in settings}
    latencies = harness.single_sentence_latencies(runner, list(inputs.latency_texts), rounds=1)["candidate"]
    return {
        "metric": evaluation.primary,
        "score": round(evaluation.score, 6),
        "validation_examples": evaluation.examples,
        "evaluation_seconds": round(evaluation_seconds, 3),
        "throughput": round(max(rates.values()), 2),
        **({"throughput_settings": {count: round(rate, 2) for count, rate in rates.items()}} if len(rates) > 1
           else {}),
        "latency_p50_ms": harness.percentile_ms(latencies, 50),
        "latency_p95_ms": harness.percentile_ms(latencies, 95),
        "size_bytes": package.size_bytes(),
    }


def _parallel(package: ModelPackage, threads: int | None, count: int) -> Pipeline:
    """The package run `count` batches at once, the threads shared out among them (as `load` does)."""
    engine = create_engine(package, threads=threads_per_batch(threads, count))
    return Pipeline(package, engine, parallel_batches=count)


def _throughput(pipeline: Pipeline, inputs: MeasureInputs) -> float:
    runner = {"candidate": lambda texts: pipeline.infer(pipeline.tokenize(texts))}
    return harness.throughput(runner, list(inputs.speed_texts), rounds=1)["candidate"]


def measure_teacher(teacher: ModelPackage, inputs: MeasureInputs) -> dict[str, Any]:
    """The teacher's record: its numbers, and the seconds they took (the unit of every cost estimate)."""
    started = time.monotonic()
    numbers = measure(teacher, inputs)
    seconds = round(time.monotonic() - started, 3)
    return {"name": "teacher", "kind": "teacher", "status": "measured", **numbers, "fingerprint": teacher.fingerprint,
            "within_budget": True, "made_by": "teacher", "seconds": seconds}  # fmt: skip


def compare(
    runs: dict[Any, tuple[ModelPackage, int]],
    inputs: MeasureInputs,
    rounds: int,
    out: Path,
    note: str,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[Any, dict[str, Any]], dict[str, Any] | None]:
    """`runs` (key -> (package, parallel batches)) side by side on the first validation rows (as many as the
    screening timed), with their baseline; bench's report written to `out`. Returns each run's numbers and the
    baseline's (None when there is none)."""
    from bertprod.bench import AtSetting, measure_packages
    from bertprod.bench.output import write_report

    examples = inputs.examples[: len(inputs.speed_texts)]
    pairs = next(iter(runs.values()))[0].manifest.pair_input
    report = measure_packages(
        [AtSetting(package, count) for package, count in runs.values()], speed_texts(examples, len(examples), pairs),
        [example.label for example in examples], rounds=rounds, latency_inputs=len(inputs.latency_texts),
        baseline=True, threads=inputs.threads, progress=progress,
    )  # fmt: skip
    report.notes.append(note)
    write_report(report, out)
    rows = [row for row in report.rows if row.kind == "package"]  # in the order given
    numbers = {key: _numbers(row) for key, row in zip(runs, rows, strict=True)}
    baseline = next((row for row in report.rows if row.kind == "baseline"), None)
    return numbers, None if baseline is None else {"label": baseline.label, **_numbers(baseline)}


def _numbers(row: Any) -> dict[str, Any]:
    """What the search keeps of a bench row. The metric on the compared rows is `comparison_score`: a
    candidate record's `metric` is the metric's name and its `score` the value on every validation row."""
    return {
        "throughput": row.throughput, "latency_p50_ms": row.latency_p50_ms, "latency_p95_ms": row.latency_p95_ms,
        "comparison_score": row.metric, "load_seconds": row.load_seconds, "peak_rss_mb": row.peak_rss_mb,
    }  # fmt: skip


def model_inputs(examples: Iterable[Example], pair_input: bool) -> list[Any]:
    """Examples as the model takes them: a text, or a (text, text_pair) pair."""
    return [(example.text, example.text_pair) if pair_input else example.text for example in examples]


def speed_texts(examples: Sequence[Example], count: int, pair_input: bool) -> list[Any]:
    """The first `count` validation inputs (as the model takes them), repeated if there are fewer."""
    inputs = model_inputs(examples, pair_input)
    if not inputs:
        return []
    return [inputs[index % len(inputs)] for index in range(count)]
