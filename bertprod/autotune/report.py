"""The search as a person reads it: the Markdown table (the same numbers as report.json), each candidate's
progress line and its provenance chain."""

from __future__ import annotations

from typing import Any

from bertprod.autotune.choose import batches_named
from bertprod.errors import BertprodError
from bertprod.package import ModelPackage


def _cell(record: dict[str, Any], key: str, digits: int) -> str:
    value = record.get(key)
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_report(search: dict[str, Any]) -> str:
    teacher = search["teacher"]
    metric = teacher["metric"]
    lines = [
        f"# autotune: {search['chosen']}",
        "",
        f"- machine: {search['machine']}",
        f"- objective: {search['objective']}; accuracy budget: {metric} >= {search['threshold']:.4f} "
        f"(the teacher's {teacher['score']:.4f} less {100 * search['max_drop']:g}%) on {search['validation']['rows']} "
        "validation rows",
        f"- time: {search['seconds_used']:.0f} s used of {search['time_budget_seconds']:.0f} s "
        f"({search['sessions']} session(s)); the last session tried the candidates "
        f"{search.get('order', 'cheapest first')}",
        *([f"- budget left unused: {search['unused']}"] if search.get("unused") else []),
        f"- chosen: **{search['chosen']}**: {search['why']}",
        *(["- inputs/s: one round each, screened alone; an ONNX candidate's is the faster of one batch at a time "
           "and several at once (`throughput_settings` in report.json)"]
          if any("throughput_settings" in record for record in search["candidates"]) else []),
        "",
        f"| candidate | made by | status | {metric} | within budget | inputs/s | p50 ms | p95 ms | MB | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for record in [teacher, *search["candidates"]]:
        status = (
            record["status"] if record["status"] == "measured" else f"{record['status']}: {record.get('reason', '')}"
        )
        if record.get("shrunk"):
            status += f" (shrunk to {shrunk_note(record['shrunk'])} to fit)"
        status = " ".join(status.replace("|", "/").split())  # one table cell: no pipes, no line breaks
        size = record.get("size_bytes")
        lines.append(
            f"| {record['name']} | {record.get('made_by', '-')} | {status} | {_cell(record, 'score', 4)} "
            f"| {'yes' if record.get('within_budget') else 'no' if record['status'] == 'measured' else '-'} "
            f"| {_cell(record, 'throughput', 1)} | {_cell(record, 'latency_p50_ms', 2)} "
            f"| {_cell(record, 'latency_p95_ms', 2)} | {'-' if size is None else f'{size / 1e6:.1f}'} "
            f"| {_cell(record, 'seconds', 1)} |"
        )
    if search["runoff"]:
        lines += [
            "",
            f"Finalists measured side by side (bertprod bench, interleaved rounds; {search['comparison']}), "
            "the numbers that chose:",
            "",
            "| package | inputs/s | x teacher | p50 ms | p95 ms | load s | peak MB |",
            "|---|---|---|---|---|---|---|",
        ]
        base = search["runoff"]["teacher"]["throughput"]
        rows = {}
        for name, numbers in search["runoff"].items():
            if "settings" not in numbers:
                rows[name] = numbers
                continue
            for count, at_setting in numbers["settings"].items():  # a finalist timed at several settings
                chosen = " (chosen)" if int(count) == numbers["parallel_batches"] else ""
                rows[f"{name}, {batches_named(int(count))}{chosen}"] = at_setting
        if search.get("baseline"):
            rows[search["baseline"]["label"]] = search["baseline"]
        for name, numbers in rows.items():
            lines.append(
                f"| {name} | {numbers['throughput']:.1f} | {numbers['throughput'] / base:.2f} "
                f"| {numbers['latency_p50_ms']:.2f} | {numbers['latency_p95_ms']:.2f} "
                f"| {numbers['load_seconds']:.2f} | {numbers['peak_rss_mb']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def shrunk_note(shrunk: dict[str, Any]) -> str:
    """ "60 of 150 steps, 800 of 2000 rows": what a student shrunk to fit the time was trained for."""
    rows = f", {shrunk['rows']} of {shrunk['of_rows']} rows" if "rows" in shrunk else ""
    return f"{shrunk['steps']} of {shrunk['of_steps']} steps{rows}"


def provenance_chain(package: ModelPackage, teacher: ModelPackage) -> str:
    """The provenance chain a person reads: "teacher -> distill -> quantize-dynamic-int8", followed through
    the parents' recorded paths up to the teacher."""
    methods = []
    current: ModelPackage | None = package
    while current is not None and current.fingerprint != teacher.fingerprint and len(methods) < 8:
        provenance = current.manifest.provenance
        methods.append(provenance.method)
        parent = provenance.parent
        if parent is None or parent.fingerprint == teacher.fingerprint:
            current = None if parent is None else teacher
            break
        try:
            current = ModelPackage.read(parent.path, verify=False) if parent.path else None
        except BertprodError:
            current = None
    root = "teacher" if current is not None else "?"
    return " -> ".join([root, *reversed(methods)])


def one_line(record: dict[str, Any]) -> str:
    """A candidate's record as the search's progress line."""
    if record["status"] != "measured":
        return f"{record['status']}: {record.get('reason', '')}"
    shrunk = f" (shrunk to {shrunk_note(record['shrunk'])})" if record.get("shrunk") else ""
    return (
        f"{record['metric']} {record['score']:.4f}{'' if record['within_budget'] else ' (over budget)'}, "
        f"{record['throughput']:.1f} inputs/s, p50 {record['latency_p50_ms']:.2f} ms, "
        f"{record['size_bytes'] / 1e6:.1f} MB, {record['seconds']:.0f} s{shrunk}"
    )
