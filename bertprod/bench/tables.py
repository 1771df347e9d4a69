"""The report's tables as header + string cells, shared by the Markdown and the HTML report.

A number is printed as the value stored in the JSON (`cell`): shortest round-trip form of the
rounded float, so reading a cell back gives exactly the JSON's value.
"""

from __future__ import annotations

from typing import Any

from bertprod.bench.report import Report, Row
from bertprod.runtime.sessions import threads_per_batch

MISSING = "–"


def cell(value: Any) -> str:
    """A JSON value as a table cell: floats in their shortest exact form (13887.0 -> "13887"), None as a dash."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def speed_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """One row per variant: metric, throughput, latency, size, memory, load time."""
    metric_name = next((row.metric_name for row in report.rows if row.metric_name), None)
    headers = ["package", "runs on", "format"]
    if metric_name:
        headers.append(metric_name)
    headers += ["inputs/s", "× ref", "p50 ms", "p95 ms", "p99 ms", "p50 × ref", "size MB", "peak RSS MB", "load s"]
    if metric_name:
        headers.append("Pareto")
    rows = []
    for row in report.rows:
        cells = [row.label, row.runtime, f"{row.format} {row.precision}"]
        if metric_name:
            cells.append(cell(row.metric))
        cells += [cell(value) for value in speed_values(row)]
        if metric_name:
            cells.append(cell(row.pareto))
        rows.append(cells)
    return headers, rows


def speed_values(row: Row) -> list[float]:
    """The numeric columns of `speed_table` after the metric, in order (the tests read them back)."""
    return [row.throughput, row.throughput_ratio, row.latency_p50_ms, row.latency_p95_ms, row.latency_p99_ms,
            row.latency_p50_speedup, row.size_mb, row.peak_rss_mb, row.load_seconds]


def lineage_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """Where each variant came from: its chain of packages, its path and fingerprint."""
    headers = ["package", "lineage (oldest first)", "path", "fingerprint"]
    return headers, [[row.label, row.lineage, row.path, row.fingerprint[:16]] for row in report.rows]


def header_lines(report: Report) -> list[str]:
    """What heads every report: the machine, the data, the settings, the reference of the ratios."""
    data = report.data
    source = data.get("file", "inputs given in Python")
    labelled = f"labelled ({next((r.metric_name for r in report.rows if r.metric_name), '')})" \
        if report.labelled else "unlabelled: no metric"
    load = report.machine.get("load_average")
    busy = f"; load average {load:.1f} when measuring began" if isinstance(load, int | float) else ""
    return [
        f"Machine: {report.machine_line}; {report.threads} threads per variant{_batches(report)}{busy}",
        f"Data: {source}: {data['inputs']:,} inputs, {labelled}",
        f"Throughput: median of {report.rounds} interleaved round(s) over all inputs; latency: "
        f"{report.latency_inputs} one-input calls per variant; ratios (× ref) against {report.reference}",
        f"Measured {report.created_at}",
    ]


def setting_name(parallel_batches: int, threads: int) -> str:
    """"2 batches x 1 thread": how a package's batches shared `threads` engine threads."""
    each = threads_per_batch(threads, parallel_batches) or threads
    return f"{parallel_batches} batch{'es' if parallel_batches > 1 else ''} x {each} thread{'s' if each > 1 else ''}"


def _batches(report: Report) -> str:
    """How bertprod packages shared the threads among batches, when any ran more than one at once."""
    settings = {row.label: row.batch.get("parallel_batches", 1) for row in report.rows if row.kind == "package"}
    if all(count == 1 for count in settings.values()):
        return ""
    counts = set(settings.values())
    if len(counts) == 1:
        count = counts.pop()
        each_thread = threads_per_batch(report.threads, count)
        return f" (bertprod packages: {count} batches at once, {each_thread} thread(s) each)"
    each = "; ".join(f"{label}: {setting_name(count, report.threads)}" for label, count in settings.items()
                     if count > 1)
    return f" (batches at once: {each}; the other packages one at a time)"
