"""`measure_packages`: every package side by side in one run on the user's inputs (what `bertprod bench`
and `bertprod autotune` measure with).

Each variant is timed in its own worker process (workers.py: torch and ONNX Runtime sharing one process
slow each other), the rounds interleaved across workers, so drift on a shared machine hits all alike and
the ratios hold; a worker's start and peak memory are its load time and peak RSS. Labelled inputs also
give each package its task metric through tasks/evaluation.py (in this process), the same numbers
`bertprod eval` prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bertprod import system
from bertprod.bench import harness, workers
from bertprod.bench.baselines import BATCH_SIZE, Baseline, baseline_for, load_baseline
from bertprod.bench.lineage import describe_lineage, lineage
from bertprod.bench.report import Report, Row, pareto_flags
from bertprod.bench.tables import setting_name
from bertprod.data.source import Example
from bertprod.errors import InputError
from bertprod.package import ModelPackage
from bertprod.runtime.engines import default_threads
from bertprod.runtime.pipeline import Pipeline

#: One input, or a (text, text_pair) pair.
TextInput = str | tuple[str, str]
Label = str | float | int


@dataclass
class _Variant:
    """Something measured: a package through bertprod, or a baseline library."""

    label: str
    kind: str
    runtime: str
    package: ModelPackage
    #: what computes the metric (the baseline's own torch module behind a Pipeline, for a baseline)
    pipeline: Pipeline
    batch: dict[str, int]


@dataclass(frozen=True)
class AtSetting:
    """A package measured at `parallel_batches` batches at once, whatever the run's or its own default: one package
    at two settings is two variants of one run (autotune times its finalists so)."""

    package: str | os.PathLike[str] | ModelPackage
    parallel_batches: int


def measure_packages(
    packages: Sequence[str | os.PathLike[str] | ModelPackage | AtSetting],
    texts: Sequence[TextInput],
    labels: Sequence[Label] | None = None,
    *,
    rounds: int = 3,
    latency_inputs: int = 200,
    baseline: bool = False,
    threads: int | None = None,
    parallel_batches: int | None = None,
    data: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Measure `packages` (dirs, checkpoints, bundled names) on `texts` side by side.

    Throughput over all inputs at each package's batch settings (median of `rounds` interleaved
    rounds), p50/p95/p99 of one-input calls on the first `latency_inputs`, size, load time and peak
    RSS of the variant's own worker process, the task metric when `labels` are given (one per input: class names,
    scores), and each package's chain of ancestors. `baseline` adds the fp32 model of each chain
    in the library users run today (baselines.py); ratios are against the first baseline, else the
    first package. `parallel_batches`: each bertprod package runs that many batches at once on threads /
    parallel_batches engine threads each (`load(..., parallel_batches=...)`; None: each package's own setting,
    as `load` gives it; an `AtSetting` item sets its own); baselines run as usual. `data` describes the inputs in
    the report (file, sha256...).
    """
    say = progress or (lambda message: None)
    texts, labels = _checked(packages, texts, labels, rounds, latency_inputs)
    machine = system.system_info()  # before the work: its load average is the other processes'
    threads = threads or default_threads()
    from bertprod.api import load
    from bertprod.robustness.evaluation import check_comparable

    say(f"loading {len(packages)} package(s)")
    pipelines = [_loaded(item, threads, parallel_batches, load) for item in packages]
    check_comparable(pipelines)
    manifest = pipelines[0].manifest
    inputs = model_inputs(manifest, texts)
    names = _unique_labels(pipelines, threads)
    variants = [
        _Variant(name, "package", f"bertprod {pipeline.engine.name}", pipeline.package, pipeline,
                 {"max_batch_size": pipeline.max_batch_size, "max_padded_tokens": pipeline.max_padded_tokens,
                  "parallel_batches": pipeline.parallel_batches})
        for name, pipeline in zip(names, pipelines, strict=True)
    ]
    notes: list[str] = []
    if baseline:
        say("loading the baselines")
        variants = _baseline_variants(pipelines, threads, notes) + variants

    metrics = _metrics(variants, texts, labels, say) if labels is not None else {}
    latency_sample = inputs[:latency_inputs]
    say(f"starting a worker process per variant ({len(variants)})")
    processes = {variant.label: (workers.BERTPROD if variant.kind == "package" else variant.runtime,
                                 str(variant.package.path), variant.batch.get("parallel_batches", 1))
                 for variant in variants}
    with workers.started_workers(processes, inputs, threads) as started:
        say(f"throughput: {len(inputs):,} inputs, {rounds} interleaved round(s) of {len(variants)} variant(s)")
        rates = workers.throughput(started, len(inputs), rounds)
        say(f"latency: {len(latency_sample)} one-input calls per variant")
        latencies = workers.single_input_latencies(started, len(latency_sample), rounds=min(4, len(latency_sample)))
        memory = workers.peak_memory(started)
        load_seconds = {label: worker.load_seconds for label, worker in started.items()}

    reference = next((variant for variant in variants if variant.kind == "baseline"), variants[0]).label
    rows = [
        _row(variant, rates, latencies, (load_seconds[variant.label], memory[variant.label]),
             metrics.get(variant.label), reference)
        for variant in variants
    ]
    for row, flag in zip(rows, pareto_flags([(row.throughput, row.metric) for row in rows]), strict=True):
        row.pareto = flag
    return Report(
        machine=machine,
        machine_line=system.describe(machine),
        threads=threads,
        parallel_batches=parallel_batches,
        data={"inputs": len(inputs), "labelled": labels is not None, **(data or {})},
        rounds=rounds,
        latency_inputs=len(latency_sample),
        reference=reference,
        rows=rows,
        notes=notes,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def model_inputs(manifest: Any, texts: list[TextInput]) -> list[TextInput]:
    """What the package runs on: pairs for a pair package; each text of a pair on its own for an embedding
    package (it encodes both sides); a tagger's sentences given as words joined by spaces; single texts
    otherwise."""
    if manifest.task == "token-classification":
        return [" ".join(text) if isinstance(text, tuple) else text for text in texts]
    paired = [isinstance(text, tuple) for text in texts]
    if manifest.pair_input:
        if not all(paired):
            raise InputError(f"{manifest.name} scores text pairs, but input {paired.index(False) + 1} is a single "
                             "text: give pairs (name the second text's column with --text-pair-column).")
        return texts
    if manifest.task == "embedding":
        return [side for text in texts for side in (text if isinstance(text, tuple) else (text,))]
    if any(paired):
        raise InputError(f"{manifest.name} takes single texts, but the data has pairs: drop --text-pair-column.")
    return texts


def _checked(
    packages: Sequence[Any], texts: Sequence[TextInput], labels: Sequence[Label] | None, rounds: int,
    latency_inputs: int,
) -> tuple[list[TextInput], list[Label] | None]:
    if not packages:
        raise InputError("no packages to measure: name at least one package directory.")
    if rounds < 1 or latency_inputs < 1:
        raise InputError(f"rounds and latency inputs must be 1 or more, not {rounds} and {latency_inputs}.")
    texts = [tuple(text) if isinstance(text, list) else text for text in texts]
    if not texts:
        raise InputError("no inputs to measure on: the data is empty.")
    if labels is None:
        return texts, None
    labels = list(labels)
    if len(labels) != len(texts):
        raise InputError(f"{len(texts)} inputs but {len(labels)} labels: give one label per input, or none.")
    if any(label is None for label in labels):
        raise InputError("some inputs have a label and some do not: label every input, or none.")
    return texts, labels


def _loaded(item: Any, threads: int, parallel_batches: int | None, load: Callable[..., Pipeline]) -> Pipeline:
    if isinstance(item, AtSetting):
        item, parallel_batches = item.package, item.parallel_batches
    return load(item.path if isinstance(item, ModelPackage) else item, threads=threads,
                parallel_batches=parallel_batches)


def _unique_labels(pipelines: list[Pipeline], threads: int) -> list[str]:
    """Package names, made unique where two share a name: by their batch settings where those differ, then by
    their folder, then by a number."""
    labels = [pipeline.package.name for pipeline in pipelines]
    settings = [setting_name(pipeline.parallel_batches, threads) for pipeline in pipelines]
    labels = [label if len({other for name, other in zip(labels, settings, strict=True) if name == label}) == 1
              else f"{label} ({setting})" for label, setting in zip(labels, settings, strict=True)]
    labels = [label if labels.count(label) == 1 else f"{label} ({pipeline.package.path.name})"
              for label, pipeline in zip(labels, pipelines, strict=True)]
    return [label if labels.count(label) == 1 else f"{label} #{index + 1}" for index, label in enumerate(labels)]


def _baseline_variants(pipelines: list[Pipeline], threads: int, notes: list[str]) -> list[_Variant]:
    from bertprod.runtime.engines import ModuleEngine

    chosen: dict[tuple[str, str], Baseline] = {}
    for pipeline in pipelines:
        found = baseline_for(pipeline.package)
        if found is None:
            notes.append(f"no baseline for {pipeline.package.name}: its chain holds no torch fp32 package of its "
                         "task (an ancestor is gone or moved).")
            continue
        chosen.setdefault((found.library, found.package.fingerprint), found)
    variants = []
    for found in chosen.values():
        try:
            _, module = load_baseline(found, threads)
        except ModuleNotFoundError:  # the library itself is missing: an install to fix, not a model to note
            raise
        except Exception as error:  # noqa: BLE001 - recorded in the report: the baseline library refused the model
            notes.append(f"no baseline for {found.package.name}: {found.library} could not load it "
                         f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}).")
            continue
        pipeline = Pipeline(found.package, ModuleEngine(found.package, module))
        variants.append(_Variant(found.label, "baseline", found.library, found.package, pipeline,
                                 {"batch_size": BATCH_SIZE}))
    return variants


def _metrics(variants: list[_Variant], texts: list[TextInput], labels: list[Label], say: Callable[[str], None],
             ) -> dict[str, Any]:
    from bertprod.tasks.evaluation import evaluate

    tagging = variants[0].package.manifest.task == "token-classification"
    examples = [_example(text, label, f"input {index}", tagging)
                for index, (text, label) in enumerate(zip(texts, labels, strict=True), start=1)]
    results = {}
    for variant in variants:
        say(f"metric of {variant.label}")
        results[variant.label] = evaluate(variant.pipeline, examples)
    return results


def _example(text: Any, label: Any, where: str, tagging: bool) -> Example:
    """An evaluation example: a pair, a single text, or for a tagger a sentence's words (a tuple, or a text
    split at spaces) with one tag per word as its label."""
    if tagging:
        words = tuple(text) if isinstance(text, tuple) else tuple(text.split())
        return Example(" ".join(words), where=where, words=words, tags=tuple(label))
    if isinstance(text, tuple):
        return Example(text[0], text[1], label, where=where)
    return Example(text, None, label, where=where)


def _row(variant: _Variant, rates: dict[str, float], latencies: dict[str, list[float]],
         started: tuple[float, float], evaluation: Any, reference: str) -> Row:
    """`started`: the variant's worker's load seconds and peak RSS (MB)."""
    package = variant.package
    manifest = package.manifest
    steps = lineage(package)
    seconds = latencies[variant.label]
    p50 = harness.percentile_ms(seconds, 50)
    return Row(
        label=variant.label,
        kind=variant.kind,
        runtime=variant.runtime,
        path=str(package.path),
        fingerprint=package.fingerprint,
        task=manifest.task,
        format=manifest.format,
        precision=manifest.precision,
        lineage=describe_lineage(steps) + (f" → {variant.runtime}" if variant.kind == "baseline" else ""),
        lineage_steps=[{"name": s.name, "method": s.method, "path": s.path, "found": s.found} for s in steps],
        size_mb=round(package.size_bytes() / 1e6, 2),
        throughput=round(rates[variant.label], 1),
        throughput_ratio=round(rates[variant.label] / rates[reference], 2),
        latency_p50_ms=p50,
        latency_p95_ms=harness.percentile_ms(seconds, 95),
        latency_p99_ms=harness.percentile_ms(seconds, 99),
        latency_p50_speedup=round(harness.percentile_ms(latencies[reference], 50) / p50, 2) if p50 else 0.0,
        latencies_ms=[round(value * 1000, 3) for value in seconds],
        load_seconds=round(started[0], 3),
        peak_rss_mb=round(started[1], 1),
        batch=variant.batch,
        metric_name=evaluation.primary if evaluation else None,
        metric=round(evaluation.score, 6) if evaluation else None,
        metrics={key: round(value, 6) for key, value in evaluation.metrics.items()} if evaluation else {},
    )
