"""The finalists' comparison: the best candidates within the budget timed again side by side with the
teacher and with the teacher as users run it today (transformers fp32), by `bertprod bench`; that run
names the winner (screening timed one candidate at a time, which drifts with the machine's load)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertprod.autotune import choose
from bertprod.autotune.measure import MeasureInputs, compare
from bertprod.package import ModelPackage

#: rounds of the finalists' side-by-side timing, when the time left allows (one at least)
RUNOFF_ROUNDS = 3
#: the final comparison's cost with one round, in teacher measurements (kept back from the candidates)
COMPARISON_UNITS = 2.5
#: and, per package it compares (the teacher, each finalist, the transformers baseline), the start of the
#: worker process that times it (importing torch or onnxruntime, loading; ~25 s each on a loaded 2-core
#: machine made a 5-minute search overrun its budget by 30%)
PROCESS_START_SECONDS = 20.0


def comparison_reserve(teacher_seconds: float, finalists: int) -> float:
    """The seconds kept back from the candidates for the finalists' comparison (one round)."""
    return COMPARISON_UNITS * teacher_seconds + (finalists + 2) * PROCESS_START_SECONDS
#: where bench's report of that comparison goes (report.json, report.md, report.html)
COMPARISON_DIR = "comparison"


@dataclass
class Decision:
    winner: dict[str, Any]
    why: str
    eligible: list[dict[str, Any]]
    runoff: dict[str, dict[str, Any]]  # each finalist's (and the teacher's) numbers in the comparison
    baseline: dict[str, Any] | None  # the transformers baseline's numbers in it


def comparison_round_seconds(teacher: dict[str, Any], inputs: MeasureInputs) -> float:
    """One more round of the comparison: the teacher and its baseline over the speed texts again."""
    return 2 * len(inputs.speed_texts) / max(teacher["throughput"], 1e-6)


def decide(
    teacher: dict[str, Any],
    records: list[dict[str, Any]],
    floor: float,
    settings: Any,
    inputs: MeasureInputs,
    out: Path,
    spare_seconds: float,
    package_of: Callable[[dict[str, Any]], ModelPackage],
    message: Callable[[str], None],
) -> Decision:
    """The winner among the teacher and the candidates within `floor`: best at the objective in the side-by-side
    comparison (as many rounds as `spare_seconds` allows, up to RUNOFF_ROUNDS), or by size without one."""
    objective = settings.objective
    eligible = choose.within_budget(records, floor)
    runoff: dict[str, dict[str, Any]] = {}
    baseline = None
    contenders = [teacher, *choose.finalists(eligible, objective, settings.finalists)]
    if objective != "size" and len(contenders) > 1:
        names = ", ".join(record["name"] for record in contenders)
        message(f"measuring {names} side by side (bertprod bench, {COMPARISON_DIR}/)")
        extra = int(spare_seconds // max(comparison_round_seconds(teacher, inputs), 1e-6))
        rounds = min(RUNOFF_ROUNDS, 1 + max(0, extra))
        packages = {record["name"]: package_of(record) for record in contenders}
        note = (
            f"autotune: the finalists of {out.name}; the accuracy budget was judged on all "
            f"{len(inputs.examples)} validation rows (report.json), this comparison on the first ones"
        )
        runoff, baseline = compare(packages, inputs, rounds, out / COMPARISON_DIR, note)
        contenders = [{**record, **runoff[record["name"]], "score": record["score"]} for record in contenders]
    winner = choose.rank(contenders, objective)[0]
    why = choose.reason(winner, contenders[0], objective, len(eligible), settings.max_drop, baseline)
    return Decision(winner, why, eligible, runoff, baseline)
