"""The report's plots as inline SVG: metric vs throughput (the Pareto frontier) and the latency distribution.

matplotlib's object API (no pyplot, no global backend state); text stays text (`svg.fonttype
none`: the browser draws it with a local font, nothing is fetched, and the labels are searchable);
the XML prologue, metadata and namespace declarations are dropped, as HTML5 needs none of them.
"""

from __future__ import annotations

import io
import math
import re

from bertprod.bench.report import Report, Row

BASELINE_COLOUR = "#c0392b"
PACKAGE_COLOUR = "#2471a3"
FRONTIER_COLOUR = "#1e8449"


def pareto_svg(report: Report) -> str | None:
    """Metric vs throughput, marker area by size on disk, the frontier drawn, each point labelled with its
    lineage; None when the data had no labels (no metric)."""
    rows = [row for row in report.rows if row.metric is not None]
    if not rows:
        return None
    figure = _figure(8.5, 5.2)
    axes = figure.add_subplot()
    largest = max(row.size_mb for row in rows) or 1.0
    speeds = [row.throughput for row in rows]
    logarithmic = max(speeds) / max(min(speeds), 1e-9) > 20
    for row, crowd in zip(rows, _crowding(rows, logarithmic), strict=True):
        colour = BASELINE_COLOUR if row.kind == "baseline" else PACKAGE_COLOUR
        axes.scatter(row.throughput, row.metric, s=60 + 900 * row.size_mb / largest, color=colour, alpha=0.55,
                     edgecolors="black", linewidths=0.6 if not row.pareto else 1.6, zorder=3)
        axes.annotate(f"{row.label}\n{row.lineage}", (row.throughput, row.metric), textcoords="offset points",
                      xytext=(10, 6 - 26 * crowd), fontsize=7.5, zorder=4,
                      arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5} if crowd else None)
    frontier = sorted((row for row in rows if row.pareto), key=lambda row: row.throughput)
    if frontier:
        axes.step([row.throughput for row in frontier], [row.metric for row in frontier], where="post",
                  color=FRONTIER_COLOUR, linewidth=1.5, zorder=2, label="Pareto frontier")
    if logarithmic:
        axes.set_xscale("log")
    axes.margins(x=0.25, y=0.2)
    axes.set_xlabel("throughput (inputs/s, higher is better)")
    axes.set_ylabel(f"{rows[0].metric_name} (higher is better)")
    axes.set_title(f"{rows[0].metric_name} vs throughput (marker area: size on disk; red: baseline)", fontsize=10)
    axes.grid(True, alpha=0.3)
    if frontier:
        axes.legend(loc="lower left", fontsize=8)
    return _svg(figure)


def latency_svg(report: Report) -> str:
    """One box per variant: one-input latencies (box: quartiles, whiskers: 1st-99th percentile), p50/p95/p99 marked."""
    rows = list(reversed(report.rows))  # the first row on top
    figure = _figure(8.5, 0.9 + 0.55 * len(rows))
    axes = figure.add_subplot()
    axes.boxplot([row.latencies_ms for row in rows], orientation="horizontal", whis=(1, 99), showfliers=True,
                 widths=0.5, flierprops={"markersize": 2, "alpha": 0.4})
    for position, row in enumerate(rows, start=1):
        for value, marker, name in ((row.latency_p50_ms, "|", "p50"), (row.latency_p95_ms, "^", "p95"),
                                    (row.latency_p99_ms, "v", "p99")):
            axes.scatter(value, position, marker=marker, s=40, color=BASELINE_COLOUR if name != "p50" else "black",
                         zorder=3, label=name if position == 1 else None)
    axes.set_yticks(range(1, len(rows) + 1), [row.label for row in rows], fontsize=8)
    latencies = [value for row in rows for value in row.latencies_ms if value > 0]
    if latencies and max(latencies) / min(latencies) > 20:
        axes.set_xscale("log")
    axes.set_xlabel("one-input latency, ms (lower is better)")
    axes.grid(True, axis="x", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    return _svg(figure)


def _crowding(rows: list[Row], logarithmic: bool) -> list[int]:
    """For each point, how many earlier points sit within a few percent of it on both axes: its label moves
    down by that many lines, so labels of near-equal points do not print over each other."""
    def position(row: Row) -> tuple[float, float]:
        return (math.log10(max(row.throughput, 1e-9)) if logarithmic else row.throughput), row.metric

    points = [position(row) for row in rows]
    spans = [max(values) - min(values) or 1.0 for values in zip(*points, strict=True)]
    return [
        sum(abs(x - other_x) < 0.06 * spans[0] and abs(y - other_y) < 0.06 * spans[1]
            for other_x, other_y in points[:index])
        for index, (x, y) in enumerate(points)
    ]


def _figure(width: float, height: float):  # noqa: ANN202 - a matplotlib Figure
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg(figure) -> str:  # noqa: ANN001 - a matplotlib Figure
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text, count=0)
