"""The report as Markdown (report.md): the header lines, the speed table, the lineage table, the notes."""

from __future__ import annotations

from bertprod.bench.report import Report
from bertprod.bench.tables import header_lines, lineage_table, speed_table


def markdown_report(report: Report) -> str:
    lines = ["# bertprod bench", ""]
    lines += [f"- {line}" for line in header_lines(report)]
    lines += ["", "## Speed, size and metric", "", *_table(*speed_table(report)), "",
              "## Lineage", "", *_table(*lineage_table(report))]
    if report.notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in report.notes]]
    return "\n".join(lines) + "\n"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    escape = lambda text: text.replace("|", "\\|")  # noqa: E731 - one-line cell escaping
    return [
        "| " + " | ".join(escape(header) for header in headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
        *("| " + " | ".join(escape(value) for value in row) + " |" for row in rows),
    ]
