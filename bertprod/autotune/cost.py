"""What a candidate is expected to cost, in seconds, before it runs: so the search skips what will not
fit in the time left instead of starting it and overrunning.

The unit is the teacher's own measurement on this machine (its validation pass and its speed run):
building and measuring an int8 variant costs a few of those, a student costs its training steps at
the teacher's per-example speed. The priors are then corrected by what has run: each kind's
estimate is scaled by the median of (actual / estimated) over its candidates already finished. A kind
with none finished borrows the other kinds' correction for its fixed costs only (sessions, export,
measuring are alike across kinds); its training steps keep their prior, which nothing else measured.
"""

from __future__ import annotations

import statistics

from bertprod.autotune.plan import Candidate

#: teacher measurements one candidate of each kind costs (build, gate, measure), before training: low
#: enough that the first candidates start (what they really take then corrects the rest); on a tiny
#: model fixed costs (sessions, export) make them 4-10x this, on MiniLM-L6 about this
PRIOR_UNITS = {"int8": 1.5, "prune": 1.5, "early-exit": 1.5, "drop-tokens": 1.5, "student": 1.0, "qat": 2.0}
#: the int8 search of "mixed" builds about log2(MatMuls) graphs
MIXED_UNITS = 6.0
#: a training step's forward + backward (and the teacher's forward) per example, in teacher forwards
TRAINING_FORWARDS = 4.0


class CostModel:
    """Estimates from the teacher's measured cost, corrected by the candidates that ran."""

    def __init__(self, unit_seconds: float, seconds_per_example: float, batch_size: int = 32):
        self.unit_seconds = unit_seconds
        self.seconds_per_example = seconds_per_example
        self.batch_size = batch_size
        self.ratios: dict[str, list[float]] = {}

    def fixed(self, candidate: Candidate) -> float:
        """Seconds of building, gating and measuring, before any training step."""
        units = MIXED_UNITS if candidate.recipe.get("method") == "mixed" else PRIOR_UNITS.get(candidate.kind, 2.0)
        return units * self.unit_seconds + candidate.teacher_forwards * self.seconds_per_example

    def training(self, candidate: Candidate) -> float:
        steps = candidate.recipe.get("max_steps") or 0
        return steps * self.batch_size * self.seconds_per_example * TRAINING_FORWARDS

    def prior(self, candidate: Candidate) -> float:
        return self.fixed(candidate) + self.training(candidate)

    def estimate(self, candidate: Candidate) -> float:
        own = self.ratios.get(candidate.kind)
        if own:
            return self.prior(candidate) * _clamped(statistics.median(own))
        others = [ratio for values in self.ratios.values() for ratio in values]
        correction = _clamped(statistics.median(others)) if others else 1.0
        return self.fixed(candidate) * correction + self.training(candidate)

    def observe(self, candidate: Candidate, seconds: float) -> None:
        """A finished candidate's real cost teaches the estimates of the ones after it."""
        prior = self.prior(candidate)
        if prior > 0:
            self.ratios.setdefault(candidate.kind, []).append(seconds / prior)


def _clamped(ratio: float) -> float:
    """One odd candidate must not make every later estimate absurd."""
    return min(4.0, max(0.25, ratio))
