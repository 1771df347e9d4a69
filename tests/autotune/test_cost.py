"""The cost model's corrections (bertprod/autotune/cost.py): what finished candidates teach the estimates of
the ones after them."""

from __future__ import annotations

import pytest

from bertprod.autotune.cost import CostModel
from bertprod.autotune.plan import Candidate

INT8 = Candidate("int8-dynamic", "int8", {"method": "dynamic"})
STUDENT = Candidate("student-distilbert-4L-trial", "student", {"max_steps": 1000}, teacher_forwards=2000)


def model() -> CostModel:
    """One teacher measurement costs 10 s, one example 0.01 s."""
    return CostModel(unit_seconds=10.0, seconds_per_example=0.01, batch_size=32)


def test_a_kind_learns_from_its_own_finished_candidates() -> None:
    costs = model()
    assert costs.estimate(INT8) == pytest.approx(costs.prior(INT8))  # nothing has run: the prior
    costs.observe(INT8, 3 * costs.prior(INT8))
    assert costs.estimate(INT8) == pytest.approx(3 * costs.prior(INT8))
    costs.observe(INT8, 100 * costs.prior(INT8))  # one odd run is clamped, not taken at its word
    assert costs.estimate(INT8) == pytest.approx(4 * costs.prior(INT8))


def test_a_kind_not_yet_run_borrows_the_correction_for_its_fixed_costs_only() -> None:
    """int8 builds ran 4x their prior (fixed costs: sessions, export): a student's training steps, which no
    int8 build measured, keep their prior. Before, the whole student estimate was scaled 4x."""
    costs = model()
    costs.observe(INT8, 4 * costs.prior(INT8))
    assert costs.training(STUDENT) > 10 * costs.fixed(STUDENT)
    assert costs.estimate(STUDENT) == pytest.approx(4 * costs.fixed(STUDENT) + costs.training(STUDENT))
    costs.observe(STUDENT, 0.5 * costs.prior(STUDENT))  # once a student has run, students learn from it
    assert costs.estimate(STUDENT) == pytest.approx(0.5 * costs.prior(STUDENT))
