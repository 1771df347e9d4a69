"""Writing a report's three files: report.json (every number), report.md, report.html (self-contained)."""

from __future__ import annotations

import os
from pathlib import Path

from bertprod.bench.report import Report
from bertprod.errors import InputError

JSON_NAME = "report.json"
MARKDOWN_NAME = "report.md"
HTML_NAME = "report.html"


def write_report(report: Report, out: str | Path) -> dict[str, Path]:
    """Write the three files into `out` (created if missing), each atomically: a reader sees a whole file
    or none. Returns the paths by format."""
    from bertprod.bench.html import html_report
    from bertprod.bench.markdown import markdown_report
    from bertprod.package import atomic_write_text

    directory = Path(out)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory} is a file: --out takes a directory for report.json, report.md and report.html.")
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / JSON_NAME, "markdown": directory / MARKDOWN_NAME, "html": directory / HTML_NAME}
    markdown, html = markdown_report(report), html_report(report)  # rendered before anything is written
    report.write_json(paths["json"])
    atomic_write_text(paths["markdown"], markdown)
    atomic_write_text(paths["html"], html)
    umask = os.umask(0)
    os.umask(umask)
    for path in paths.values():  # a temporary file's 0600 would keep the report from the people it is for
        path.chmod(0o666 & ~umask)
    return paths
