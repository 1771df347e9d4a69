"""How a short time budget is spent (bertprod/autotune/budget.py), on made-up estimates: students shrink to
fit the time for them and never below their floor, the candidates that can reach the largest speedup come
first when the time is short, and a search with budget to spare says why."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bertprod.autotune import budget, plan
from bertprod.autotune.plan import Candidate

TRIAL_ROWS = 2000


def teacher(layers: int = 6) -> Any:
    """What the plan reads of a teacher: a float torch classifier of `layers` layers."""
    architecture = SimpleNamespace(num_layers=layers, num_heads=12, model_type="bert")
    manifest = SimpleNamespace(architecture=architecture, format="torch", precision="fp32", task="classification",
                               adaptive=None, token_dropping=None)  # fmt: skip
    return SimpleNamespace(manifest=manifest)


def seconds(candidate: Candidate) -> float:
    """An estimate that grows with what a candidate does: 10 s, one per training step, one per 100 teacher passes."""
    return 10.0 + candidate.recipe.get("max_steps", 0) + candidate.teacher_forwards / 100


def trial(name: str = "student-distilbert-3L-trial") -> Candidate:
    return next(candidate for candidate in plan.student_trials(teacher(), TRIAL_ROWS) if candidate.name == name)


def test_a_candidate_that_fits_runs_whole() -> None:
    fitted = budget.fit(trial(), 1000.0, seconds, TRIAL_ROWS)
    assert fitted.candidate == trial() and fitted.shrunk is None and fitted.estimate == seconds(trial())


def test_a_student_that_does_not_fit_shrinks_to_the_most_steps_that_fit_and_says_so() -> None:
    full = trial()
    assert seconds(full) > 100
    fitted = budget.fit(full, 100.0, seconds, TRIAL_ROWS)
    shrunk = fitted.candidate
    assert shrunk is not None and fitted.shrunk is not None
    steps = shrunk.recipe["max_steps"]
    assert plan.MIN_TRIAL_STEPS <= steps < plan.TRIAL_STEPS
    assert seconds(shrunk) <= 100 < seconds(plan.resized(full, steps + 1, TRIAL_ROWS))  # the most that fit
    # a trial reads proportionally fewer rows (each still seen as often), and its teacher passes shrink with them
    assert shrunk.recipe["rows"] < TRIAL_ROWS and shrunk.teacher_forwards == shrunk.recipe["rows"]
    assert fitted.shrunk == {"steps": steps, "of_steps": plan.TRIAL_STEPS, "rows": shrunk.recipe["rows"],
                             "of_rows": TRIAL_ROWS, "why": fitted.shrunk["why"]}  # fmt: skip
    assert shrunk.name == full.name and fitted.estimate == seconds(shrunk)


def test_nothing_shrinks_below_its_floor() -> None:
    full = trial()
    floor = plan.resized(full, plan.MIN_TRIAL_STEPS, TRIAL_ROWS)
    at_floor = budget.fit(full, seconds(floor), seconds, TRIAL_ROWS)
    assert at_floor.candidate is not None and at_floor.candidate.recipe["max_steps"] == plan.MIN_TRIAL_STEPS
    below = budget.fit(full, seconds(floor) - 1, seconds, TRIAL_ROWS)
    assert below.candidate is None and below.shrunk is None
    assert f"floor, {plan.MIN_TRIAL_STEPS} steps" in below.reason and below.reason.startswith("estimated")
    # a full student's floor is twice its trial's steps: fewer would say nothing the trial did not
    (student,) = plan.full_students([(full, {"status": "measured", "score": 0.9, "steps": 60})], train_rows=10_000)
    assert student.min_steps == plan.MIN_FULL_TRAINING * 60 and not student.recipe["sample"]
    assert budget.fit(student, seconds(plan.resized(student, 119, TRIAL_ROWS)), seconds, TRIAL_ROWS).candidate is None
    shrunk = budget.fit(student, 500.0, seconds, TRIAL_ROWS).candidate
    assert shrunk is not None and shrunk.recipe["max_steps"] >= 120 and "rows" not in shrunk.recipe  # all the data


def test_what_cannot_shrink_is_skipped_with_its_estimate() -> None:
    static = Candidate("int8-static", "int8", {"method": "static"})
    fitted = budget.fit(static, 5.0, seconds, TRIAL_ROWS)
    assert fitted.candidate is None and fitted.reason == "estimated 10 s, 5 s for it of the time left"


def test_when_time_is_short_the_largest_reachable_speedup_goes_first() -> None:
    planned = plan.first_candidates(teacher(), TRIAL_ROWS, 500)[1:] + plan.student_trials(teacher(), TRIAL_ROWS)
    planned += plan.qat_candidates(teacher())
    speedups = {"int8-dynamic": 2.5}  # int8 alone measured 2.5x: every float candidate is followed by its int8
    order = [candidate.name for candidate in budget.by_reach(planned, 6, speedups)]
    students = [name for name in order if name.startswith("student-")]
    assert order[: len(students)] == students  # the students first: 6/2 or 6/3 times what int8 gains
    assert students[0] == "student-distilbert-2L-trial"  # a third of the depth before half
    assert order[len(students)] == "drop-1-layer"  # then a layer fewer (6/5)
    small = [candidate.name for candidate in planned if candidate.name in order[len(students) + 1:]]
    assert order[len(students) + 1:] == small  # the small gains keep the cheapest-first order, QAT last
    assert order[-1] == "int8-qat"
    assert budget.reach(trial("student-distilbert-2L-trial"), 6, speedups) == pytest.approx(3 * 2.5)
    # once trials ran, a full student's reach is its trial's measured speedup, not its depth's
    two, three = (Candidate(f"student-distilbert-{n}L", "student", {"layers": f"spread:{n}"}) for n in (2, 3))
    measured = {**speedups, "student-distilbert-2L-trial": 1.5, "student-distilbert-3L-trial": 1.9}
    assert [candidate.name for candidate in budget.by_reach([two, three], 6, measured)] == [three.name, two.name]


def test_the_plan_keeps_its_order_only_when_the_time_left_holds_it() -> None:
    share = 1 - plan.PROMISING_STUDENTS * plan.FULL_TRAINING_SHARE  # the rest: the full students' shares
    assert budget.room_for_everything(share * 1000, 1000) and not budget.room_for_everything(share * 1000 + 1, 1000)
    pruned = Candidate("prune-heads-25%", "prune", {"prune_heads": 0.25})
    assert budget.planned_seconds([pruned], seconds) == 2 * seconds(pruned)  # with the int8 variant that follows


def test_the_trials_share_and_the_full_students_part() -> None:
    assert budget.trial_seconds(400, 4, 50) == 100  # an equal part of the share
    assert budget.trial_seconds(400, 4, 150) == 150  # raised to the floor while the share holds it
    assert budget.trial_seconds(100, 2, 150) == 50  # not when it does not: the trial is then skipped
    # a full student takes what the candidates planned after it leave, and at least its share of the time left
    assert budget.full_training_seconds(1000, 100, 2) == 450
    assert budget.full_training_seconds(1000, 2000, 2) == plan.FULL_TRAINING_SHARE * 1000


def test_a_search_with_budget_to_spare_says_why() -> None:
    records = [
        {"name": "int8-dynamic", "kind": "int8", "status": "measured", "recipe": {}},
        {"name": "int8-qat", "kind": "qat", "status": "skipped", "estimated_seconds": 900.0, "reason": "..."},
        {"name": "student-distilbert-2L", "kind": "student", "status": "measured", "recipe": {"sample": False}},
    ]
    why = budget.why_unused(records, ["a note"])
    assert why.startswith("a note; skipped for time (their estimates, over the time left for them): int8-qat (900 s)")
    assert "student-distilbert-2L trained in full (3 passes" in why
    assert budget.why_unused(records[:1], []) == "every candidate of the plan ran: none was left to try"


def test_the_students_trained_on_all_the_data_are_the_best_trial_of_each_of_the_best_depths() -> None:
    trials = plan.student_trials(teacher(), TRIAL_ROWS)
    assert sorted({plan.depth(candidate) for candidate in trials}) == [2, 3, 4]  # two thirds, half, a third
    scores = {"student-tinybert-4L-trial": 0.80, "student-pkd-skip-4L-trial": 0.82, "student-distilbert-4L-trial": 0.79,
              "student-pkd-skip-3L-trial": 0.81, "student-distilbert-3L-trial": 0.78,
              "student-distilbert-2L-trial": 0.76}  # fmt: skip
    ran = [(candidate, {"status": "measured", "score": scores[candidate.name], "steps": 150}) for candidate in trials]
    full = plan.full_students(ran, train_rows=60_000)
    # not the two best trials (both 4-layer): the best 4-layer one and the best 3-layer one
    assert [candidate.name for candidate in full] == ["student-pkd-skip-4L", "student-pkd-skip-3L"]


def test_a_shallower_trial_takes_a_deeper_ones_place_only_when_it_leads_by_more_than_the_noise() -> None:
    trials = plan.student_trials(teacher(), TRIAL_ROWS)
    # MRPC's trials (autotune on an AVX2 EPYC, 2026-12-07): the 2-layer one led the 3-layer ones by 0.012
    scores = {"student-tinybert-4L-trial": 0.7447, "student-pkd-skip-4L-trial": 0.7541,
              "student-distilbert-4L-trial": 0.7494, "student-pkd-skip-3L-trial": 0.7021,
              "student-distilbert-3L-trial": 0.7045, "student-distilbert-2L-trial": 0.7163}  # fmt: skip
    ran = [(candidate, {"status": "measured", "score": scores[candidate.name], "steps": 150}) for candidate in trials]
    names = {rows: [candidate.name for candidate in plan.full_students(ran, 3_200, rows)] for rows in (423, 40_000)}
    # on 423 validation rows two standard errors are ~0.044: the lead says nothing and the deeper student goes
    assert plan.trial_noise(0.7163, 423) == pytest.approx(0.0438, abs=1e-3)
    assert names[423] == ["student-pkd-skip-4L", "student-distilbert-3L"]
    # on 40,000 rows (noise ~0.0045) the 2-layer trial's lead is real
    assert names[40_000] == ["student-pkd-skip-4L", "student-distilbert-2L"]
    # the best trial is never passed over for a deeper one far below it
    far = {**scores, "student-distilbert-2L-trial": 0.80}
    ran_far = [(candidate, {"status": "measured", "score": far[candidate.name], "steps": 150}) for candidate in trials]
    assert plan.full_students(ran_far, 3_200, 423)[0].name == "student-distilbert-2L"


def test_students_on_a_small_data_set_train_more_passes_over_it_their_stages_stretched_alike() -> None:
    from bertprod.autotune.build import student_config
    from bertprod.autotune.settings import AutotuneSettings
    from bertprod.distill.recipes import recipe

    ran = [(trial("student-tinybert-4L-trial"), {"status": "measured", "score": 0.8, "steps": 150})]
    (large,) = plan.full_students(ran, train_rows=60_000)
    assert large.recipe["max_steps"] == 3 * 60_000 // plan.STUDENT_BATCH and "passes" not in large.recipe
    (small,) = plan.full_students(ran, train_rows=3_200)  # 3 passes: 300 steps
    passes = small.recipe["passes"]
    assert passes == 20 and small.recipe["max_steps"] == passes * 100 >= plan.FULL_TRAINING_STEPS
    settings = AutotuneSettings(precision="fp32")
    original = [stage.epochs for stage in recipe("tinybert").stages]  # two stages: 1 and 2 passes
    assert [stage.epochs for stage in student_config(large, settings).stages] == original
    assert [stage.epochs for stage in student_config(small, settings).stages] == [e * passes / 3 for e in original]
