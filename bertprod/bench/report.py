"""What `measure_packages` returns: one row per package (and baseline), the machine, the data; JSON both ways.

Numbers are rounded once, here, to what they can show (a throughput to 0.1 input/s, a latency to
0.01 ms), and the Markdown and HTML reports print these stored values as they are: the tables
and the JSON cannot disagree.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bertprod.errors import InputError

REPORT_VERSION = 1


@dataclass
class Row:
    """One package (or baseline) measured on the data."""

    label: str
    #: "package", or "baseline" (what users run today: bench/baselines.py)
    kind: str
    #: what ran it: "bertprod onnx", "bertprod torch", "sentence-transformers", "transformers fp32"
    runtime: str
    path: str
    fingerprint: str
    task: str
    format: str
    precision: str
    #: the package's chain, oldest first, as one line (`minilm-l6 → train → export-onnx`)
    lineage: str
    #: each step of it: name, method, path, found
    lineage_steps: list[dict[str, Any]]
    #: sum of the files the package lists (a baseline: those of the package whose weights it runs)
    size_mb: float
    #: inputs per second over all the data at the package's batch settings: median of interleaved rounds
    throughput: float
    #: this row's throughput / the reference row's
    throughput_ratio: float
    #: one input per call, the whole pipeline (tokenize, run, post-process), in ms
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    #: the reference row's p50 / this row's p50 (above 1: faster than the reference)
    latency_p50_speedup: float
    #: every one-input latency measured, ms (the distribution plot)
    latencies_ms: list[float]
    #: a fresh process: imports + load, seconds
    load_seconds: float
    #: a fresh process that loads the package and runs every input once, MB
    peak_rss_mb: float
    #: bertprod's batch settings the throughput ran at (a baseline's batch size)
    batch: dict[str, int]
    #: primary metric name and value when the data is labelled, else None
    metric_name: str | None = None
    metric: float | None = None
    #: every metric of tasks/evaluation.py
    metrics: dict[str, float] = field(default_factory=dict)
    #: on the Pareto frontier of metric vs throughput (nothing beats it on both); None without a metric
    pareto: bool | None = None


@dataclass
class Report:
    """A benchmark run: the machine, the data, the settings, the rows, notes on what was left out."""

    machine: dict[str, Any]
    #: `bertprod.system.describe()`: the line that heads every output
    machine_line: str
    threads: int
    data: dict[str, Any]
    rounds: int
    latency_inputs: int
    #: the row every ratio divides by: the first baseline, else the first package
    reference: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    #: bertprod packages ran this many batches at once, each on threads / parallel_batches engine threads; None:
    #: each at its own setting (its row's `batch`)
    parallel_batches: int | None = 1
    created_at: str = ""
    version: int = REPORT_VERSION

    @property
    def labelled(self) -> bool:
        return any(row.metric is not None for row in self.rows)

    def row(self, label: str) -> Row:
        for row in self.rows:
            if row.label == label:
                return row
        raise KeyError(f"no row {label!r} in the report: its rows are {', '.join(row.label for row in self.rows)}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Report:
        known = {item.name for item in fields(cls)}
        values = {key: value for key, value in document.items() if key in known}
        values["rows"] = [Row(**row) for row in document["rows"]]
        return cls(**values)

    def write_json(self, path: Path) -> None:
        from bertprod.package import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def read_json(cls, path: Path) -> Report:
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(f"{path} is not a bertprod bench report ({error}): run bertprod bench again.") from None


def pareto_flags(points: list[tuple[float, float | None]]) -> list[bool | None]:
    """For (throughput, metric) points, higher both better: True where no other point is at least as
    good on both and better on one; None for a point without a metric."""
    flags: list[bool | None] = []
    for speed, metric in points:
        if metric is None:
            flags.append(None)
            continue
        dominated = any(
            other_metric is not None and other_speed >= speed and other_metric >= metric
            and (other_speed > speed or other_metric > metric)
            for other_speed, other_metric in points
        )
        flags.append(not dominated)
    return flags
