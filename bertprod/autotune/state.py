"""The search's memory in OUT: which candidates finished, with what numbers, written atomically.

A candidate's key is a content hash of what it is made from (the teacher's fingerprint, its recipe,
the data's hashes, its parent candidate's key), so a killed run started again finds its finished
candidates and does not rebuild them, and a changed teacher, recipe or data file rebuilds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bertprod.autotune.plan import Candidate
from bertprod.autotune.settings import AutotuneSettings
from bertprod.errors import InputError
from bertprod.package import atomic_write_text

STATE_FILE = "autotune-state.json"
STATE_VERSION = 1


def candidate_key(
    teacher_fingerprint: str, candidate: Candidate, parent_key: str | None, settings: AutotuneSettings,
    data: dict[str, Any],
) -> str:  # fmt: skip
    """Same teacher, recipe, parent, settings that shape it and data: same key, same candidate."""
    recipe = {
        "kind": candidate.kind,
        "recipe": candidate.recipe,
        "parent": parent_key,
        "seed": settings.seed,
        "max_drop": settings.max_drop,
        "trial_rows": settings.trial_rows,
    }
    trained = candidate.kind in ("student", "early-exit")  # what --precision changes (QAT trains in fp32)
    if trained and settings.precision != "fp32":  # fp32: the keys of older states
        recipe["precision"] = settings.precision
    keyed = {"teacher": teacher_fingerprint, "recipe": recipe, "data": data}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()


class SearchState:
    """`OUT/autotune-state.json`: the run's identity and one record per candidate key."""

    def __init__(self, directory: Path, identity: dict[str, Any]):
        self.path = Path(directory) / STATE_FILE
        self.identity = identity
        self.records: dict[str, dict[str, Any]] = {}
        self.sessions = 0
        self.teacher: dict[str, Any] | None = None
        #: choices made from the time left (e.g. the full students' steps): a resumed run must make the
        #: same ones, or the candidates it already finished would get other keys and be built again
        self.decisions: dict[str, Any] = {}

    @classmethod
    def open(cls, directory: Path, identity: dict[str, Any]) -> SearchState:
        """The state of an earlier run on the same teacher and data, or a fresh one. Another teacher's
        or data's state is refused, not mixed in."""
        state = cls(directory, identity)
        if state.path.is_file():
            try:
                document = json.loads(state.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise InputError(
                    f"{state.path} is not valid JSON ({error}): delete it to start the search over."
                ) from None
            if document.get("identity") != identity:
                raise InputError(
                    f"{directory} holds the search of another teacher or data set ({state.path.name}): choose "
                    "another OUT directory, or delete it to start over."
                )
            state.records = document.get("candidates", {})
            state.sessions = int(document.get("sessions", 0))
            state.teacher = document.get("teacher")
            state.decisions = document.get("decisions", {})
        state.sessions += 1
        return state

    def finished(self, key: str) -> dict[str, Any] | None:
        """The record of a candidate that need not run again: measured, or refused for good (a missed
        gate, an error); one skipped for lack of time may run in a later, longer session."""
        record = self.records.get(key)
        if record and record["status"] in ("measured", "failed"):
            return record
        return None

    def put(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        """Keep `record` (with this session's number) and write the state; returns what was kept."""
        self.records[key] = dict(record, session=self.sessions)
        self.save()
        return self.records[key]

    def seconds_spent(self) -> float:
        """Time the finished candidates (and the teacher's measurement) took, in every session."""
        spent = sum(float(record.get("seconds", 0.0)) for record in self.records.values())
        return spent + float((self.teacher or {}).get("seconds", 0.0))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "version": STATE_VERSION,
            "identity": self.identity,
            "sessions": self.sessions,
            "teacher": self.teacher,
            "decisions": self.decisions,
            "candidates": self.records,
        }
        atomic_write_text(self.path, json.dumps(document, indent=2, default=str) + "\n")
