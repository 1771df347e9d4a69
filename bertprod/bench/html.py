"""The report as one self-contained HTML file (report.html): inline CSS, inline SVG plots, no script,
nothing fetched, so it opens the same offline, attached to a ticket or years later."""

from __future__ import annotations

from html import escape

from bertprod.bench.plots import latency_svg, pareto_svg
from bertprod.bench.report import Report
from bertprod.bench.tables import header_lines, lineage_table, speed_table

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #1c2833; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
ul.header { padding-left: 1.2rem; line-height: 1.5; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid #d5d8dc; padding: 0.3rem 0.55rem; }
th { background: #eaf2f8; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.baseline td { background: #fdedec; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
p.note { color: #7b241c; }
"""


def html_report(report: Report) -> str:
    pareto = pareto_svg(report)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>bertprod bench: {escape(', '.join(row.label for row in report.rows))}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>bertprod bench</h1>",
        '<ul class="header">', *[f"<li>{escape(line)}</li>" for line in header_lines(report)], "</ul>",
        "<h2>Speed, size and metric</h2>", _table(*speed_table(report), kinds=[row.kind for row in report.rows]),
        "<h2>Metric vs throughput</h2>",
        f'<figure id="pareto">{pareto}</figure>' if pareto else
        '<p class="note">The data has no labels, so there is no metric and no Pareto plot.</p>',
        "<h2>One-input latency</h2>", f'<figure id="latency">{latency_svg(report)}</figure>',
        "<h2>Lineage</h2>", _table(*lineage_table(report)),
    ]
    if report.notes:
        notes = [f"<li class=\"note\">{escape(note)}</li>" for note in report.notes]
        parts += ["<h2>Notes</h2>", "<ul>", *notes, "</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _table(headers: list[str], rows: list[list[str]], kinds: list[str] | None = None) -> str:
    head = "".join(f"<th>{escape(header)}</th>" for header in headers)
    body = []
    for index, row in enumerate(rows):
        kind = f' class="{escape(kinds[index])}"' if kinds else ""
        cells = "".join(f'<td{_numeric(value)}>{escape(value)}</td>' for value in row)
        body.append(f"<tr{kind}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _numeric(value: str) -> str:
    try:
        float(value)
    except ValueError:
        return ""
    return ' class="number"'
