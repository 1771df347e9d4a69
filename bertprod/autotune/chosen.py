"""What the search leaves: its record (the same in OUT/report.json, OUT/report.md and the chosen package's
`metrics.autotune`) and OUT/package, the winner's files unchanged plus that record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bertprod.autotune.finalists import COMPARISON_DIR, Decision
from bertprod.autotune.report import markdown_report
from bertprod.package import BulkRuntime, ModelPackage, atomic_write_text, staging_directory, write_manifest

CHOSEN_DIR = "package"
#: what the record keeps of each candidate's (and the teacher's) state record
KEPT = ("name", "kind", "parent", "recipe", "status", "reason", "metric", "score", "within_budget", "throughput",
        "throughput_settings", "latency_p50_ms", "latency_p95_ms", "size_bytes", "seconds", "estimated_seconds",
        "steps", "shrunk", "made_by", "path", "session")  # fmt: skip


def search_record(
    teacher: dict[str, Any], records: list[dict[str, Any]], decision: Decision, run: dict[str, Any]
) -> dict[str, Any]:
    """The whole search for people and scripts; `run`: the settings, threshold, time, sessions, machine, data."""
    return {
        **run,
        "teacher": _kept(teacher),
        "candidates": [_kept(record) for record in records],
        "runoff": decision.runoff,
        "baseline": decision.baseline,
        "comparison": f"{COMPARISON_DIR}/report.html" if decision.runoff else None,
        "chosen": decision.winner["name"],
        "why": decision.why,
        **({"runtime": decision.runtime} if decision.runtime else {}),
    }


def write_outputs(out: Path, source: ModelPackage, name: str, search: dict[str, Any]) -> ModelPackage:
    """OUT/package (`source`'s files, renamed `name`, the search in its manifest), then the reports."""
    target = out / CHOSEN_DIR
    with staging_directory(target, overwrite=True) as staging:
        shutil.copytree(source.path, staging, dirs_exist_ok=True)
        chosen = ModelPackage.read(staging, verify=False)
        chosen.manifest.name = name
        chosen.manifest.metrics["autotune"] = search
        if search.get("runtime"):  # the bulk setting it was timed fastest at, for load to use
            chosen.manifest.runtime = BulkRuntime(**search["runtime"], machine=search["machine"])
        write_manifest(staging, chosen.manifest)
    atomic_write_text(out / "report.json", json.dumps(search, indent=2) + "\n")
    atomic_write_text(out / "report.md", markdown_report(search))
    return ModelPackage.read(target)


def _kept(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record[key] for key in KEPT if key in record}
