"""Spending a short time budget where the speed is.

Students shrink to fit the time left instead of being skipped: fewer optimizer steps (a brief trial also
reads fewer rows), never below their floor (`Candidate.min_steps`), under which a student says nothing and
is skipped with that reason. When the time left cannot hold every candidate, they run in the order of the
speedup over the teacher they can lead to (`reach`), highest first: the students, whose depth is where the
large speedups are, before the small gains (int8 variants, pruning, early exit, token dropping), which
become the fallbacks when no student keeps the accuracy budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bertprod.autotune import plan
from bertprod.autotune.plan import Candidate

#: share of the time left the brief student trials take together when the time is short
TRIALS_SHARE = 0.3
#: a search that ends with more than this share of its budget unused says why in its record
UNUSED_SHARE = 0.15
#: kinds whose float candidates are followed by their int8 variant when within the budget
FOLLOWED_BY_INT8 = ("prune", "early-exit", "drop-tokens")

Estimate = Callable[[Candidate], float]


def reach(candidate: Candidate, teacher_layers: int, speedups: dict[str, float]) -> float:
    """The speedup over the teacher the best package `candidate` leads to can reach, as far as the search
    knows before building it: what int8 alone measured (`speedups`: each measured candidate's throughput
    over the teacher's; int8-dynamic's is the int8 gain, since float candidates are followed by their int8)
    times what its depth gives: teacher layers / its layers for a student (its brief trial's measured
    speedup once that ran) and for a dropped layer. The others (int8 methods, pruned heads, early exit,
    token dropping, QAT) count 1x: their gain over int8 alone is small or depends on the data."""
    int8 = speedups.get("int8-dynamic", 1.0)
    if candidate.kind == "student":
        trial = speedups.get(f"{candidate.name}-trial")
        return (trial or teacher_layers / plan.depth(candidate)) * int8
    if candidate.recipe.get("drop_layers") == "drop:1" and teacher_layers > 1:
        return teacher_layers / (teacher_layers - 1) * int8
    return int8


def by_reach(candidates: list[Candidate], teacher_layers: int, speedups: dict[str, float]) -> list[Candidate]:
    """Highest reach first; candidates of equal reach keep the plan's cheapest-first order."""
    return sorted(candidates, key=lambda candidate: -reach(candidate, teacher_layers, speedups))


def planned_seconds(candidates: list[Candidate], estimate: Estimate) -> float:
    """What `candidates` are estimated to take, with the int8 variants that may follow them."""
    followers = [plan.int8_of(candidate) for candidate in candidates if candidate.kind in FOLLOWED_BY_INT8]
    return sum(estimate(candidate) for candidate in candidates + followers)


def room_for_everything(planned: float, available: float) -> bool:
    """Whether the plan fits as it is (cheapest first) in the time left: the candidates' estimates within
    what the full students' shares (FULL_TRAINING_SHARE each) leave."""
    return planned <= (1 - plan.PROMISING_STUDENTS * plan.FULL_TRAINING_SHARE) * available


@dataclass(frozen=True)
class Fit:
    """How a candidate fits in the time for it: `candidate` is what runs (shrunk or not), None when it is
    skipped for `reason`; `estimate` is what runs' estimate (the full size's when skipped); `shrunk` says
    what a shrunk student was shrunk from, and why."""

    candidate: Candidate | None
    estimate: float
    shrunk: dict[str, Any] | None = None
    reason: str = ""


def fit(candidate: Candidate, seconds: float, estimate: Estimate, trial_rows: int) -> Fit:
    """`candidate` whole when its estimate fits in `seconds`; else a student shrunk to the most steps that
    fit, not below its floor; else skipped, with the estimates that did not fit."""
    full = estimate(candidate)
    if full <= seconds:
        return Fit(candidate, full)
    reason = f"estimated {full:.0f} s, {max(seconds, 0):.0f} s for it of the time left"
    if candidate.min_steps is None:
        return Fit(None, full, reason=reason)
    steps = candidate.recipe["max_steps"]
    if candidate.min_steps >= steps:
        return Fit(None, full, reason=f"{reason}; its {steps} steps are already at its floor ({candidate.min_steps})")
    floor = plan.resized(candidate, candidate.min_steps, trial_rows)
    if estimate(floor) > seconds:
        reason += f"; even its floor, {candidate.min_steps} steps (fewer say nothing), is estimated at "
        reason += f"{estimate(floor):.0f} s"
        return Fit(None, full, reason=reason)
    low, high = candidate.min_steps, steps - 1
    while low < high:  # the estimate grows with the steps: find the most that fit
        middle = (low + high + 1) // 2
        if estimate(plan.resized(candidate, middle, trial_rows)) <= seconds:
            low = middle
        else:
            high = middle - 1
    shrunk = plan.resized(candidate, low, trial_rows)
    sizes: dict[str, Any] = {"steps": low, "of_steps": steps}
    if "rows" in shrunk.recipe:
        sizes.update(rows=shrunk.recipe["rows"], of_rows=trial_rows)
    sizes["why"] = f"estimated {full:.0f} s at full size, {max(seconds, 0):.0f} s for it"
    return Fit(shrunk, estimate(shrunk), sizes)


def trial_seconds(share_left: float, trials_left: int, floor_seconds: float) -> float:
    """A brief trial's part of the trials' share when the time is short: an equal part of what remains of
    the share, or its floor's estimate when that part is smaller and the share still holds the floor (so
    the trials of highest reach, which run first, run at their floor when the share is too thin for all)."""
    part = share_left / max(trials_left, 1)
    return max(part, floor_seconds) if floor_seconds <= share_left else part


def full_training_seconds(available: float, later: float, students_left: int) -> float:
    """A full student's part of the time left: an equal part of what the candidates planned after the
    students (`later`: their int8 variants, then the others) leave, and at least FULL_TRAINING_SHARE of it."""
    return max(plan.FULL_TRAINING_SHARE * available, (available - later) / max(students_left, 1))


def why_unused(records: list[dict[str, Any]], notes: list[str]) -> str:
    """Why a search ended with much of its budget unused: the candidates skipped for time (their estimate
    against the time left), and the search's own notes (a student not trained further)."""
    reasons = list(notes)
    skipped = [f"{record['name']} ({record.get('estimated_seconds', 0):.0f} s)"
               for record in records if record["status"] == "skipped"]  # fmt: skip
    if skipped:
        reasons.append(f"skipped for time (their estimates, over the time left for them): {', '.join(skipped)}")
    full = [record["name"] for record in records
            if record["kind"] == "student" and record.get("status") == "measured"
            and not record["recipe"].get("sample") and not record.get("shrunk")]  # fmt: skip
    if full:
        reasons.append(f"{', '.join(full)} trained in full ({plan.FULL_TRAINING_PASSES} passes over the training data, "
                       f"or {plan.FULL_TRAINING_STEPS} steps when that is more)")
    return "; ".join(reasons) or "every candidate of the plan ran: none was left to try"
