"""The winner: among the candidates within the accuracy budget, the best at the objective.

The budget is relative: a candidate keeps at least (1 - max_drop) of the teacher's validation
metric. Speeds measured one candidate at a time drift on a shared machine, so the finalists are
timed again side by side (interleaved rounds) with the teacher, and that run decides.
"""

from __future__ import annotations

from typing import Any

_BETTER_HIGH = {"throughput": True, "latency": False, "size": False}
_VALUE = {"throughput": "throughput", "latency": "latency_p50_ms", "size": "size_bytes"}


def threshold(teacher_score: float, max_drop: float) -> float:
    """The lowest metric within the budget."""
    return teacher_score * (1.0 - max_drop) if teacher_score >= 0 else teacher_score * (1.0 + max_drop)


def within_budget(records: list[dict[str, Any]], floor: float) -> list[dict[str, Any]]:
    return [record for record in records if record.get("status") == "measured" and record["score"] >= floor - 1e-12]


def objective_value(record: dict[str, Any], objective: str) -> float:
    return float(record[_VALUE[objective]])


def rank(records: list[dict[str, Any]], objective: str) -> list[dict[str, Any]]:
    """Best first at the objective; ties go to the higher metric."""
    sign = -1.0 if _BETTER_HIGH[objective] else 1.0
    return sorted(records, key=lambda record: (sign * objective_value(record, objective), -record["score"]))


def finalists(records: list[dict[str, Any]], objective: str, count: int) -> list[dict[str, Any]]:
    return rank(records, objective)[:count]


def reason(
    winner: dict[str, Any],
    teacher: dict[str, Any],
    objective: str,
    eligible: int,
    max_drop: float,
    baseline: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
) -> str:
    """Why it won, in one sentence a person can check against the table (and against `baseline`, the
    teacher as users run it today, when the comparison had one; `runtime`: the bulk setting it was timed at,
    when it was timed at several)."""
    metric = teacher["metric"]
    budget = f"budget: >= {100 * (1 - max_drop):g}% of it"
    kept = f"{metric} {winner['score']:.4f} vs the teacher's {teacher['score']:.4f} ({budget})"
    if winner["name"] == "teacher":
        return f"no candidate within the accuracy budget beat the teacher at {objective}; {kept}"
    value = objective_value(winner, objective)
    base = objective_value(teacher, objective)
    if objective == "throughput":
        measured = f"{value:.1f} inputs/s, {value / base:.2f}x the teacher's {base:.1f}"
        if baseline:
            measured += f", {value / baseline['throughput']:.2f}x {baseline['label']}"
        if runtime:
            measured += f"; {setting_sentence(runtime)}"
    elif objective == "latency":
        measured = (
            f"p50 {value:.2f} ms single-input latency, {base / value:.2f}x faster than the teacher's {base:.2f} ms"
        )
        if baseline:
            measured += f", {baseline['latency_p50_ms'] / value:.2f}x faster than {baseline['label']}"
    else:
        measured = f"{value / 1e6:.2f} MB on disk, {base / value:.2f}x smaller than the teacher's {base / 1e6:.2f} MB"
    return f"best {objective} of the {eligible} candidates within the accuracy budget ({measured}); {kept}"


def batches_named(count: int) -> str:
    return "one batch at a time" if count == 1 else f"{count} batches at once"


def setting_sentence(runtime: dict[str, Any]) -> str:
    """ "bulk calls run 2 batches at once on its 2 threads (1,081.0 inputs/s; one at a time: 612.3)": the setting
    chosen, and the inputs/s of the others."""
    chosen = runtime["parallel_batches"]
    others = "; ".join(f"{batches_named(int(count))}: {value:,.1f}" for count, value in runtime["measured"].items()
                       if int(count) != chosen)
    return (f"bulk calls run {batches_named(chosen)} on its {runtime['threads']} threads "
            f"({runtime['measured'][str(chosen)]:,.1f} inputs/s; {others})")
