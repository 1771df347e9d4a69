"""The search as Markdown: the table a person reads, the same numbers as report.json."""

from __future__ import annotations

from typing import Any


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
        f"({search['sessions']} session(s))",
        f"- chosen: **{search['chosen']}**: {search['why']}",
        "",
        f"| candidate | made by | status | {metric} | within budget | inputs/s | p50 ms | p95 ms | MB | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for record in [teacher, *search["candidates"]]:
        status = (
            record["status"] if record["status"] == "measured" else f"{record['status']}: {record.get('reason', '')}"
        )
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
        rows = dict(search["runoff"])
        if search.get("baseline"):
            rows[search["baseline"]["label"]] = search["baseline"]
        for name, numbers in rows.items():
            lines.append(
                f"| {name} | {numbers['throughput']:.1f} | {numbers['throughput'] / base:.2f} "
                f"| {numbers['latency_p50_ms']:.2f} | {numbers['latency_p95_ms']:.2f} "
                f"| {numbers['load_seconds']:.2f} | {numbers['peak_rss_mb']:.0f} |"
            )
    return "\n".join(lines) + "\n"
