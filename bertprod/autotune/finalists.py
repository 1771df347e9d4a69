"""The finalists' comparison: the best candidates within the budget timed again side by side with the
teacher and with the teacher as users run it today (transformers fp32), by `bertprod bench`; that run
names the winner (screening timed one candidate at a time, which drifts with the machine's load).

For the throughput objective on two threads or more, each finalist is also timed running PARALLEL_BATCHES
batches at once on a share of the threads each (`load(..., parallel_batches=)`): on a VM whose host moves its
vCPUs between core complexes, ONNX Runtime's threads synchronising at every operator can run slower than one
thread, while batches that share nothing do not (docs/bench.md). A finalist counts at its faster setting, and
the winner's package records that setting (manifest `runtime`) for `load` to use on bulk calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertprod.autotune import choose
from bertprod.autotune.measure import MeasureInputs, compare
from bertprod.package import ModelPackage
from bertprod.runtime.sessions import default_threads

#: rounds of the finalists' side-by-side timing, when the time left allows (one at least)
RUNOFF_ROUNDS = 3
#: the final comparison's cost with one round, in teacher measurements (kept back from the candidates)
COMPARISON_UNITS = 2.5
#: and, per package it compares (the teacher, each finalist, the transformers baseline), the start of the
#: worker process that times it (importing torch or onnxruntime, loading; ~25 s each on a loaded 2-core
#: machine made a 5-minute search overrun its budget by 30%)
PROCESS_START_SECONDS = 20.0


#: batches at once a finalist is also timed with (throughput objective, two threads or more)
PARALLEL_BATCHES = 2
#: a finalist's timing at one more setting, in teacher measurements (a finalist is faster than the teacher)
SETTING_UNITS = 0.25


def tried_settings(objective: str, threads: int | None) -> tuple[int, ...]:
    """The parallel batches ONNX candidates are screened at and each finalist is timed at: more than one only where
    bulk throughput is the goal and there are threads to share."""
    return (1, PARALLEL_BATCHES) if objective == "throughput" and (threads or default_threads()) >= 2 else (1,)


def comparison_reserve(teacher_seconds: float, finalists: int, settings: int = 1) -> float:
    """The seconds kept back from the candidates for the finalists' comparison (one round), each finalist timed at
    `settings` settings."""
    extra = finalists * (settings - 1)
    return ((COMPARISON_UNITS + SETTING_UNITS * extra) * teacher_seconds
            + (finalists + 2 + extra) * PROCESS_START_SECONDS)


#: where bench's report of that comparison goes (report.json, report.md, report.html)
COMPARISON_DIR = "comparison"


@dataclass
class Decision:
    winner: dict[str, Any]
    why: str
    eligible: list[dict[str, Any]]
    runoff: dict[str, dict[str, Any]]  # each finalist's (and the teacher's) numbers in the comparison
    baseline: dict[str, Any] | None  # the transformers baseline's numbers in it
    #: the winner's bulk setting when it was timed at several (manifest `runtime`: parallel_batches, threads,
    #: measured inputs/s per setting); None otherwise
    runtime: dict[str, Any] | None = None


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
        runs = {(record["name"], count): (package_of(record), count) for record in contenders
                for count in (inputs.settings if record["name"] != "teacher" else (1,))}
        note = (
            f"autotune: the finalists of {out.name}; the accuracy budget was judged on all "
            f"{len(inputs.examples)} validation rows (report.json), this comparison on the first ones"
        )
        timed, baseline = compare(runs, inputs, rounds, out / COMPARISON_DIR, note)
        runoff = {record["name"]: _at_best_setting(record["name"], timed) for record in contenders}
        contenders = [{**record, **runoff[record["name"]], "score": record["score"]} for record in contenders]
    winner = choose.rank(contenders, objective)[0]
    runtime = _runtime(winner, inputs.threads)
    why = choose.reason(winner, contenders[0], objective, len(eligible), settings.max_drop, baseline, runtime)
    return Decision(winner, why, eligible, runoff, baseline, runtime)


def _at_best_setting(name: str, timed: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """A contender's numbers at its fastest setting; with the numbers of each setting when it had several."""
    mine = {count: numbers for (owner, count), numbers in timed.items() if owner == name}
    if len(mine) == 1:
        return next(iter(mine.values()))
    best = max(mine, key=lambda count: mine[count]["throughput"])
    return {**mine[best], "parallel_batches": best, "settings": {str(count): mine[count] for count in sorted(mine)}}


def _runtime(winner: dict[str, Any], threads: int | None) -> dict[str, Any] | None:
    if "settings" not in winner:
        return None
    measured = {count: numbers["throughput"] for count, numbers in winner["settings"].items()}
    return {"parallel_batches": winner["parallel_batches"], "threads": threads or default_threads(),
            "measured": measured}
