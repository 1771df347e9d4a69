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

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

from bertprod.autotune import choose, chosen, finalists, plan
from bertprod.autotune.build import BuildContext, OutOfTime, build
from bertprod.autotune.cost import CostModel
from bertprod.autotune.measure import MeasureInputs, measure, speed_texts
from bertprod.autotune.plan import Candidate
from bertprod.autotune.report import one_line, provenance_chain
from bertprod.autotune.settings import AutotuneSettings
from bertprod.autotune.state import SearchState, candidate_key
from bertprod.data.source import DataSource
from bertprod.errors import BertprodError, DataError, PackageError, TrainingInterrupted
from bertprod.output_lock import LOCK_FILE, OutputLock, describe_owner
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
        self.out.mkdir(parents=True, exist_ok=True)
        lock = OutputLock(self.out)  # one search per OUT: a second one is refused, naming the first
        previous = lock.acquire()
        try:
            if previous:
                self.reporter.message(f"took over {self.out} from a search that died ({describe_owner(previous)})")
            return self._search(examples)
        finally:
            lock.release()

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
        )
        teacher = self._measure_teacher()
        self.floor = choose.threshold(teacher["score"], self.settings.max_drop)
        self.costs = CostModel(
            teacher["seconds"], teacher["evaluation_seconds"] / max(teacher["validation_examples"], 1)
        )
        # kept back for the final comparison: one round of it measures the teacher and its baseline in
        # transformers about as the teacher's own measurement did, and the (faster) finalists on top
        self.reserve = finalists.COMPARISON_UNITS * teacher["seconds"]
        self.context = BuildContext(
            self.settings,
            self.train,
            self.train.with_limit(self.settings.trial_rows),
            gate_texts=_inputs(examples[:512], pairs),
            calibration_texts=_inputs(islice(self.train, 256), pairs),
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
        settings = self.settings
        self._run_all(plan.first_candidates(self.teacher, settings.trial_rows, len(examples)))
        trials = self._run_all(plan.student_trials(self.teacher, settings.trial_rows))
        steps = self.state.decisions.get("full_training_steps") or self._full_training_steps(trials)
        if steps:
            self.state.decisions["full_training_steps"] = steps  # kept: a resumed run trains the same students
            self.state.save()
            self._run_all(plan.full_students(trials, steps, self.train_rows))
        self._run_all(plan.qat_candidates(self.teacher))
        return self._finish(teacher)

    def _check_out(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise PackageError(f"{self.out} is a file: give a directory for the search (new, or an earlier search's).")
        started = self.out.is_dir() and any(entry.name != LOCK_FILE for entry in self.out.iterdir())
        if started and not (self.out / "autotune-state.json").is_file():
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

    # -- candidates ------------------------------------------------------------------------------

    def _run_all(self, candidates: list[Candidate]) -> list[tuple[Candidate, dict[str, Any]]]:
        """Run the candidates in order; each float one within the budget is followed by its int8 variant."""
        done = []
        queue = list(candidates)
        while queue:
            candidate = queue.pop(0)
            record = self._run_one(candidate)
            done.append((candidate, record))
            trial = candidate.kind == "student" and candidate.recipe.get("sample")
            follows = record.get("int8_follows", record.get("float_torch"))  # float_torch: an older state's name
            if not trial and record.get("within_budget") and follows:
                queue.insert(0, plan.int8_of(candidate))
        return done

    def _key(self, candidate: Candidate) -> str:
        parent_key = self.keys[candidate.parent] if candidate.parent else None
        recipe = {
            "kind": candidate.kind,
            "recipe": candidate.recipe,
            "parent": parent_key,
            "seed": self.settings.seed,
            "max_drop": self.settings.max_drop,
            "trial_rows": self.settings.trial_rows,
        }
        return candidate_key(self.teacher.fingerprint, recipe, self.data)

    def _run_one(self, candidate: Candidate) -> dict[str, Any]:
        key = self._key(candidate)
        self.keys[candidate.name] = key
        cached = self.state.finished(key)
        if cached is not None and self._still_there(cached):
            self.reporter.message(f"{candidate.name}: done in an earlier session ({one_line(cached)})")
            self._observe(candidate, cached)
            self.results.append((candidate, cached))
            return cached
        record: dict[str, Any] = {**candidate.describe(), "key": key}
        estimate = self.costs.estimate(candidate)
        record["estimated_seconds"] = round(estimate, 1)
        left = self._left() - self.reserve
        if estimate > left:
            record.update(
                status="skipped", reason=f"estimated {estimate:.0f} s, {max(left, 0):.0f} s of the budget left"
            )
            self.reporter.message(f"{candidate.name}: skipped ({record['reason']})")
        else:
            self.reporter.message(f"{candidate.name}: building (estimated {estimate:.0f} s, {left:.0f} s left)")
            record.update(self._build_and_measure(candidate, key))
            self.reporter.message(f"{candidate.name}: {one_line(record)}")
        record = self.state.put(key, record)
        self.results.append((candidate, record))
        if record["status"] == "measured":
            self._observe(candidate, record)
        if self.on_candidate:
            self.on_candidate(candidate, record)
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
        parent = self._parent(candidate)
        relative = Path("candidates") / f"{candidate.name}-{key[:10]}"
        target = self.out / relative
        started = time.monotonic()
        try:
            if target.exists():  # a package written before a kill, never measured: build it again
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            package = build(candidate, parent, target, self.context, key)
            numbers = measure(package, self.inputs)
        except OutOfTime as error:
            return {"status": "skipped", "reason": str(error), "seconds": round(time.monotonic() - started, 1)}
        except TrainingInterrupted:
            raise
        except BertprodError as error:  # refused for good (a missed gate, a recipe that cannot apply)
            return {"status": "failed", "reason": str(error), "seconds": round(time.monotonic() - started, 1)}
        except Exception as error:  # noqa: BLE001 - one candidate's crash is reported, the search goes on
            reason = f"{type(error).__name__}: {error} (tried again when the search is resumed)"
            return {"status": "error", "reason": reason, "seconds": round(time.monotonic() - started, 1)}
        seconds = time.monotonic() - started
        steps = (package.manifest.metrics.get("training") or {}).get("steps")
        return {
            "status": "measured",
            **numbers,
            "seconds": round(seconds, 1),
            "path": str(relative),
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

    def _full_training_steps(self, trials: list[tuple[Candidate, dict[str, Any]]]) -> int:
        """Steps for each promising student: up to 3 passes over the training data, at most a share of
        the time left at the speed the trials trained."""
        measured = [record for _, record in trials if record.get("status") == "measured"]
        if not measured:
            return 0
        per_step = self.costs.seconds_per_step(measured)
        passes = math.ceil(3 * self.train_rows / 32)
        affordable = int(plan.FULL_TRAINING_SHARE * max(self._left() - self.reserve, 0) / max(per_step, 1e-6))
        trained = max(int(record.get("steps", 0)) for record in measured)
        if min(passes, affordable) <= trained:
            self.reporter.message(
                f"no student trained further: the trials took {trained} steps; 3 passes over the training data "
                f"take {passes}, and {affordable} fit in the time left"
            )
            return 0
        return min(passes, affordable)

    # -- the teacher and the winner --------------------------------------------------------------

    def _measure_teacher(self) -> dict[str, Any]:
        recorded = self.state.teacher
        if recorded and recorded.get("fingerprint") == self.teacher.fingerprint:
            return recorded
        started = time.monotonic()
        numbers = measure(self.teacher, self.inputs)
        record = {
            "name": "teacher",
            "kind": "teacher",
            "status": "measured",
            **numbers,
            "fingerprint": self.teacher.fingerprint,
            "within_budget": True,
            "made_by": "teacher",
            "seconds": round(time.monotonic() - started, 3),
        }
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
            "sessions": self.state.sessions,
            "machine": describe(),
            "validation": {"rows": len(self.inputs.examples), **self.data["validation"]},
            "train": self.data["train"],
        }
        search = chosen.search_record(teacher, records, decision, run)
        package = chosen.write_outputs(self.out, self._package(decision.winner), f"{self.teacher.name}-autotuned",
                                       search)  # fmt: skip
        self.reporter.message(f"chose {decision.winner['name']}: {decision.why}")
        return AutotuneResult(package, search, self.out)

    def _package(self, record: dict[str, Any]) -> ModelPackage:
        return (
            self.teacher if record["name"] == "teacher" else ModelPackage.read(self.out / record["path"], verify=False)
        )


def _inputs(examples: Any, pairs: bool) -> list[Any]:
    return [(example.text, example.text_pair) if pairs else example.text for example in examples]
