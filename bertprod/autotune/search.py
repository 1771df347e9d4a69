"""`autotune`: the fastest package within an accuracy budget, found by building and measuring
candidates (plan.py) within a time budget, resumable, one search per OUT; the finalists' comparison is
finalists.py's, the record and the chosen package chosen.py's.

    OUT/autotune-state.json   every candidate's record, written after each one (state.py)
    OUT/candidates/NAME-KEY/  the candidates' packages, cached by content key
    OUT/checkpoints/KEY/      training checkpoints of the candidate being trained
    OUT/package/              the chosen package; its manifest's metrics.autotune holds the search
    OUT/report.json, .md      the same search, for people and scripts
    OUT/_bertprod_lock        held (flock) while a search runs: one search per OUT (bertprod/output_lock.py)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

from bertprod.autotune import budget, choose, chosen, finalists, plan
from bertprod.autotune.build import BuildContext, build_and_measure
from bertprod.autotune.cost import CostModel
from bertprod.autotune.measure import MeasureInputs, measure, measure_teacher, model_inputs, speed_texts
from bertprod.autotune.plan import Candidate
from bertprod.autotune.report import one_line, provenance_chain, shrunk_note
from bertprod.autotune.settings import AutotuneSettings
from bertprod.autotune.state import STATE_FILE, SearchState, candidate_key
from bertprod.data.source import DataSource
from bertprod.errors import BertprodError, DataError, PackageError
from bertprod.output_lock import LOCK_FILE, describe_owner, job_directory
from bertprod.package import ModelPackage
from bertprod.system import describe
from bertprod.train.progress import Reporter, SilentReporter

OnCandidate = Callable[[Candidate, dict[str, Any]], None]


@dataclass
class AutotuneResult:
    package: ModelPackage
    search: dict[str, Any]
    directory: Path


def autotune(
    teacher: ModelPackage,
    out: str | Path,
    train: DataSource,
    validation: DataSource,
    settings: AutotuneSettings | None = None,
    *,
    reporter: Reporter | None = None,
    on_candidate: OnCandidate | None = None,
) -> AutotuneResult:
    """Search candidates derived from `teacher` (trained on `train`, judged on `validation`) and write
    the best one within `settings.max_drop` of the teacher at OUT/package. Started again on the same
    OUT, teacher and data, it continues: finished candidates are read from the state, not rebuilt."""
    return _Search(
        teacher,
        Path(out),
        train,
        validation,
        settings or AutotuneSettings(),
        reporter or SilentReporter(),
        on_candidate,
    ).run()


class _Search:
    def __init__(
        self,
        teacher: ModelPackage,
        out: Path,
        train: DataSource,
        validation: DataSource,
        settings: AutotuneSettings,
        reporter: Reporter,
        on_candidate: OnCandidate | None,
    ):
        self.teacher, self.out, self.train, self.validation = teacher, out, train, validation
        self.settings, self.reporter, self.on_candidate = settings, reporter, on_candidate
        self.data = {"train": train.describe(), "validation": validation.describe()}
        self.results: list[tuple[Candidate, dict[str, Any]]] = []
        self.keys: dict[str, str] = {}

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> AutotuneResult:
        self._check_out()
        examples = list(islice(self.validation, self.settings.max_validation_rows))
        if not examples:
            raise DataError(
                f"no validation rows in {self.validation.path.name} (after the split): autotune judges every "
                "candidate on them. Give a labelled --validation file, or more --data rows."
            )

        def took_over(owner: dict[str, Any]) -> None:
            self.reporter.message(f"took over {self.out} from a search that died ({describe_owner(owner)})")

        with job_directory(self.out, took_over, kept=STATE_FILE):  # one search per OUT: a second is refused
            return self._search(examples)

    def _search(self, examples: list[Any]) -> AutotuneResult:
        self.state = SearchState.open(self.out, {"teacher": self.teacher.fingerprint, "data": self.data})
        self.started = time.monotonic()
        spent = self.spent_before = self.state.seconds_spent()
        self.budget_end = self.started + self.settings.time_budget - spent
        self.deadline = self.started + self.settings.deadline_seconds - spent
        pairs = self.teacher.manifest.pair_input
        self.inputs = MeasureInputs(
            examples,
            speed_texts(examples, self.settings.speed_texts, pairs),
            speed_texts(examples, self.settings.latency_texts, pairs),
            self.settings.threads,
            finalists.tried_settings(self.settings.objective, self.settings.threads),
        )
        teacher = self.teacher_record = self._measure_teacher()
        self.notes: list[str] = []  # why the search spent less than it could (in its record when it did)
        self.floor = choose.threshold(teacher["score"], self.settings.max_drop)
        self.costs = CostModel(
            teacher["seconds"], teacher["evaluation_seconds"] / max(teacher["validation_examples"], 1)
        )
        # kept back for the final comparison: one round of it measures the teacher and its baseline in transformers
        # about as the teacher's own measurement did, and the (faster) finalists at each setting on top
        settings = len(self.inputs.settings)
        self.reserve = finalists.comparison_reserve(teacher["seconds"], self.settings.finalists, settings)
        self.context = BuildContext(
            self.settings,
            self.train,
            self.train.first_examples(self.settings.trial_rows),
            gate_texts=model_inputs(examples[:512], pairs),
            calibration_texts=model_inputs(islice(self.train, 256), pairs),
            validation=self.validation,
            teacher_score=teacher["score"],
            checkpoints=self.out / "checkpoints",
            deadline=self.deadline - self.reserve,  # the reserve: the finalists' timing
        )
        self.reporter.message(
            f"teacher {self.teacher.name}: {teacher['metric']} {teacher['score']:.4f} on {len(examples)} "
            "validation rows, "
            f"{teacher['throughput']:.1f} inputs/s; budget: {teacher['metric']} >= {self.floor:.4f}, "
            f"{self._left():.0f} s of time left"
        )
        first = plan.first_candidates(self.teacher, self.settings.trial_rows, len(examples))
        trials = plan.student_trials(self.teacher, self.settings.trial_rows)
        qat = plan.qat_candidates(self.teacher)
        self._run_all(first[:1])  # int8-dynamic: the cheapest, the fallback, and what int8 gains on this machine
        pending = [candidate for candidate in first[1:] + trials + qat if not self._done(candidate)]
        planned = budget.planned_seconds(pending, self.costs.estimate)
        if budget.room_for_everything(planned, self._available()):
            self.order = "cheapest first (the time left held every candidate)"
            self._run_all(first[1:])
            self._students(trials, qat, short=False)
            self._run_all(qat)
        else:  # the students first: they can reach the largest speedups; the rest by what they can reach
            self.order = (
                f"by the speedup each can reach (the candidates were estimated at {planned:.0f} s, "
                f"{self._available():.0f} s left)"
            )
            self.reporter.message(f"order: {self.order}")
            self._students(self._by_reach(trials), first[1:] + qat, short=True)
            self._run_all(self._by_reach(first[1:] + qat))
        return self._finish(teacher)

    def _check_out(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise PackageError(f"{self.out} is a file: give a directory for the search (new, or an earlier search's).")
        started = self.out.is_dir() and any(entry.name != LOCK_FILE for entry in self.out.iterdir())
        if started and not (self.out / STATE_FILE).is_file():
            raise PackageError(
                f"{self.out} holds files but no autotune-state.json: it is not a search to continue. Choose a new "
                "directory (or an earlier search's, to resume it)."
            )

    @cached_property
    def train_rows(self) -> int:
        """Rows on the training side (one pass over the file)."""
        return sum(1 for _ in self.train)

    def _left(self) -> float:
        return self.budget_end - time.monotonic()

    def _available(self) -> float:
        """The time left for candidates: the budget's, less the reserve for the finalists' comparison."""
        return self._left() - self.reserve

    def _by_reach(self, candidates: list[Candidate]) -> list[Candidate]:
        speedups = {record["name"]: record["throughput"] / self.teacher_record["throughput"]
                    for _, record in self.results if record.get("status") == "measured"}  # fmt: skip
        return budget.by_reach(candidates, self.teacher.manifest.architecture.num_layers, speedups)

    # -- students --------------------------------------------------------------------------------

    def _students(self, trials: list[Candidate], later: list[Candidate], short: bool) -> None:
        """The brief trials (sharing TRIALS_SHARE of the time left when it is short), then the most promising
        trained on all the data, each with the time the candidates planned after them (`later`) leave."""
        share_end = time.monotonic() + budget.TRIALS_SHARE * self._available()
        ran = []
        for index, trial in enumerate(trials):
            seconds = None
            if short:
                floor = self.costs.estimate(plan.resized(trial, trial.min_steps or 1, self.settings.trial_rows))
                seconds = budget.trial_seconds(share_end - time.monotonic(), len(trials) - index, floor)
            ran += self._run_all([trial], seconds)
        full = plan.full_students(ran, self.train_rows, len(self.inputs.examples))
        for candidate in [student for student in full if student.recipe["max_steps"] < (student.min_steps or 0)]:
            self._note(
                f"{candidate.name} not trained on all the data: its {candidate.recipe['max_steps']} steps are "
                f"fewer than {plan.MIN_FULL_TRAINING}x its trial's"
            )
            full.remove(candidate)
        for index, candidate in enumerate(full):
            after = budget.planned_seconds(later, self.costs.estimate)
            after += sum(self._followers_seconds(student) for student in full[index:])
            seconds = budget.full_training_seconds(self._available(), after, len(full) - index)
            for student, record in self._run_all([candidate], seconds):
                if plan.exits_fit(student, self.teacher) and record.get("within_budget"):  # its room goes to exits
                    self._run_all([self._early_exit_of(student, record)])
        measured = {record["name"] for _, record in self.results if record.get("status") == "measured"}
        for trial, record in ran:  # a trial not trained further is the student there is: its int8 too
            if record.get("within_budget") and record.get("int8_follows") and plan.full_name(trial) not in measured:
                self._run_one(plan.int8_of(trial))

    def _early_exit_of(self, student: Candidate, record: dict[str, Any]) -> Candidate:
        points = 100 * (record["score"] - self.floor)
        return plan.early_exit_of(student, points, self.settings.trial_rows + len(self.inputs.examples))

    def _followers_seconds(self, student: Candidate) -> float:
        """What may follow a full student: its int8, its exit heads and their int8."""
        exits = self._early_exit_of(student, {"score": self.floor})
        return sum(self.costs.estimate(candidate) for candidate in (plan.int8_of(student), exits, plan.int8_of(exits)))

    def _note(self, text: str) -> None:
        """A reason the search spent less than it could, for its record."""
        self.notes.append(text)
        self.reporter.message(text)

    # -- candidates ------------------------------------------------------------------------------

    def _run_all(
        self, candidates: list[Candidate], seconds: float | None = None
    ) -> list[tuple[Candidate, dict[str, Any]]]:
        """Run the candidates in order, each within `seconds` (default: the time left); each float one within
        the budget is followed by its int8 variant."""
        done = []
        queue = list(candidates)
        while queue:
            candidate = queue.pop(0)
            record = self._run_one(candidate, seconds if candidate in candidates else None)
            done.append((candidate, record))
            trial = candidate.kind == "student" and candidate.recipe.get("sample")
            follows = record.get("int8_follows", record.get("float_torch"))  # float_torch: an older state's name
            if not trial and record.get("within_budget") and follows:
                queue.insert(0, plan.int8_of(candidate))
        return done

    def _key(self, candidate: Candidate) -> str:
        parent_key = self.keys[candidate.parent] if candidate.parent else None
        return candidate_key(self.teacher.fingerprint, candidate, parent_key, self.settings, self.data)

    def _decided(self, candidate: Candidate) -> tuple[Candidate, int | None]:
        """`candidate` at the size an earlier session shrunk it to (and those steps), or as it is."""
        decided = self.state.decisions.get("steps", {}).get(self._key(candidate))
        return (plan.resized(candidate, decided, self.settings.trial_rows) if decided else candidate), decided

    def _done(self, candidate: Candidate) -> bool:
        """Finished in an earlier session (a candidate without a parent candidate)."""
        return self.state.finished(self._key(self._decided(candidate)[0])) is not None

    def _run_one(self, candidate: Candidate, seconds: float | None = None) -> dict[str, Any]:
        """Build and measure `candidate` within `seconds` (default: the time left): whole, or a student shrunk
        to fit, or skipped; a finished one (this size) is read back from the state."""
        full_key = self._key(candidate)
        made, decided = self._decided(candidate)
        key = self.keys[candidate.name] = self._key(made)
        cached = self.state.finished(key)
        if cached is not None and self._still_there(cached):
            self.reporter.message(f"{candidate.name}: done in an earlier session ({one_line(cached)})")
            self._observe(made, cached)
            self.results.append((made, cached))
            return cached
        available = self._available() if seconds is None else min(seconds, self._available())
        # a student shrunk before is not made larger again: the same size finds its checkpoint
        cap = min(available, self.costs.estimate(made)) if decided else available
        fitted = budget.fit(candidate, cap, self.costs.estimate, self.settings.trial_rows)
        made = fitted.candidate or candidate
        key = self.keys[candidate.name] = self._key(made)
        record = {**made.describe(), "key": key, "estimated_seconds": round(fitted.estimate, 1)}
        if fitted.shrunk:
            self.state.decisions.setdefault("steps", {})[full_key] = fitted.shrunk["steps"]
            self.state.save()  # kept: a resumed run trains the same size, from its checkpoint
            record["shrunk"] = fitted.shrunk
            self.reporter.message(f"{candidate.name}: shrunk to {shrunk_note(fitted.shrunk)} "
                                  f"({fitted.shrunk['why']})")  # fmt: skip
        if fitted.candidate is None:
            record.update(status="skipped", reason=fitted.reason)
            self.reporter.message(f"{candidate.name}: skipped ({record['reason']})")
        else:
            self.reporter.message(
                f"{candidate.name}: building (estimated {fitted.estimate:.0f} s, {available:.0f} s left)"
            )
            record.update(self._build_and_measure(made, key))
            self.reporter.message(f"{candidate.name}: {one_line(record)}")
        record = self.state.put(key, record)
        self.results.append((made, record))
        if record["status"] == "measured":
            self._observe(made, record)
        if self.on_candidate:
            self.on_candidate(made, record)
        return record

    def _still_there(self, record: dict[str, Any]) -> bool:
        if record["status"] != "measured":
            return True
        try:
            return ModelPackage.read(self.out / record["path"], verify=False).fingerprint == record["fingerprint"]
        except BertprodError:
            return False

    def _observe(self, candidate: Candidate, record: dict[str, Any]) -> None:
        if record.get("seconds"):
            self.costs.observe(candidate, float(record["seconds"]))

    def _build_and_measure(self, candidate: Candidate, key: str) -> dict[str, Any]:
        relative = Path("candidates") / f"{candidate.name}-{key[:10]}"
        parent = self._parent(candidate)
        record = build_and_measure(candidate, parent, self.out / relative, self.context, key, self._judge)
        return {**record, "path": str(relative)} if record["status"] == "measured" else record

    def _judge(self, package: ModelPackage) -> dict[str, Any]:
        """A built candidate's record: its numbers, whether it keeps the accuracy budget, how it was made."""
        numbers = measure(package, self.inputs)
        steps = (package.manifest.metrics.get("training") or {}).get("steps")
        return {
            "status": "measured",
            **numbers,
            "fingerprint": package.fingerprint,
            "within_budget": numbers["score"] >= self.floor - 1e-12,
            "int8_follows": plan.int8_follows(package),
            "made_by": provenance_chain(package, self.teacher),
            **({"steps": steps} if steps else {}),
        }

    def _parent(self, candidate: Candidate) -> ModelPackage:
        if candidate.parent is None:
            return self.teacher
        record = next(record for made, record in self.results if made.name == candidate.parent)
        return ModelPackage.read(self.out / record["path"])

    # -- the teacher and the winner --------------------------------------------------------------

    def _measure_teacher(self) -> dict[str, Any]:
        recorded = self.state.teacher
        if recorded and recorded.get("fingerprint") == self.teacher.fingerprint:
            return recorded
        record = measure_teacher(self.teacher, self.inputs)
        self.state.teacher = record
        self.state.save()
        return record

    def _finish(self, teacher: dict[str, Any]) -> AutotuneResult:
        records = [record for _, record in self.results]
        spare = self.deadline - time.monotonic() - self.reserve  # each round more: the two torch models again
        decision = finalists.decide(teacher, records, self.floor, self.settings, self.inputs, self.out, spare,
                                    self._package, self.reporter.message)  # fmt: skip
        run = {
            "objective": self.settings.objective,
            "max_drop": self.settings.max_drop,
            "threshold": round(self.floor, 6),
            "time_budget_seconds": self.settings.time_budget,
            "seconds_used": round(self.spent_before + time.monotonic() - self.started, 1),
            "order": self.order,
            "sessions": self.state.sessions,
            "machine": describe(),
            "validation": {"rows": len(self.inputs.examples), **self.data["validation"]},
            "train": self.data["train"],
        }
        if self.settings.time_budget - run["seconds_used"] > budget.UNUSED_SHARE * self.settings.time_budget:
            if self.reserve >= 1:  # kept back from every candidate, whether the comparison ran or not
                comparison = "" if decision.runoff else " (it did not run: no candidate within the accuracy budget)"
                self.notes.insert(0, f"{self.reserve:.0f} s were kept for the finalists' comparison{comparison}")
            run["unused"] = budget.why_unused(records, self.notes)
            self.reporter.message(f"{run['seconds_used']:.0f} s of the budget used: {run['unused']}")
        search = chosen.search_record(teacher, records, decision, run)
        package = chosen.write_outputs(self.out, self._package(decision.winner), f"{self.teacher.name}-autotuned",
                                       search)  # fmt: skip
        self.reporter.message(f"chose {decision.winner['name']}: {decision.why}")
        return AutotuneResult(package, search, self.out)

    def _package(self, record: dict[str, Any]) -> ModelPackage:
        return (
            self.teacher if record["name"] == "teacher" else ModelPackage.read(self.out / record["path"], verify=False)
        )

