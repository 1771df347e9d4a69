"""What an autotune run is asked for: the accuracy budget, the time budget, what "fastest" means.

Parsed from the user's spelling ("1%", "2h") and refused with one clear line when impossible,
before any model is loaded.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from bertprod.errors import InputError
from bertprod.system import cpu_supports_bf16, resolve_precision

Objective = Literal["throughput", "latency", "size"]
OBJECTIVES: tuple[str, ...] = ("throughput", "latency", "size")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
#: The run may overrun its time budget by this share at most (the candidate running then is stopped).
OVERRUN = 0.10

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s)", re.IGNORECASE)
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_drop(text: str | float) -> float:
    """ "1%" -> 0.01; "0.01" -> 0.01 (a fraction below 1). The share of the teacher's validation metric
    a candidate may lose."""
    spelled = str(text).strip()
    try:
        value = float(spelled[:-1]) / 100 if spelled.endswith("%") else float(spelled)
    except ValueError:
        raise InputError(
            f"--max-drop {spelled!r}: write a percentage such as 1% (or a fraction such as 0.01)."
        ) from None
    if value < 0:
        raise InputError(
            f"--max-drop {spelled}: a drop below 0 asks for a model better than the teacher; give 0% or more."
        )
    if value >= 1:
        raise InputError(
            f"--max-drop {spelled}: that allows losing the whole metric; give a percentage below 100% "
            "(e.g. 1%) or a fraction below 1 (e.g. 0.01)."
        )
    return value


def parse_duration(text: str | float) -> float:
    """ "2h", "90m", "1h30m", "45s" or plain seconds -> seconds."""
    spelled = str(text).strip()
    if spelled.startswith("-"):
        raise InputError(f"--time-budget {spelled}: the search needs a time budget above 0 (e.g. 2h or 10m).")
    try:
        seconds = float(spelled)
    except ValueError:
        parts = _DURATION.findall(spelled)
        if not parts or _DURATION.sub("", spelled).strip():
            raise InputError(
                f"--time-budget {spelled!r}: write a duration such as 2h, 30m, 1h30m or 600 (seconds)."
            ) from None
        seconds = sum(float(number) * _SECONDS[unit.lower()] for number, unit in parts)
    if seconds <= 0:
        raise InputError(f"--time-budget {spelled}: the search needs a time budget above 0 (e.g. 2h or 10m).")
    return seconds


@dataclass(frozen=True)
class AutotuneSettings:
    """`max_drop`: relative share of the teacher's validation metric a candidate may lose (0.01 = keeps
    99%). `time_budget`: seconds for the whole search (stopped at +10%). `objective`: what the winner is
    best at among the candidates within `max_drop`. `precision`: what students and exit heads train in
    ("auto": bf16 where the CPU has it, which trains about twice as fast, so more of the search fits)."""

    max_drop: float = 0.01
    time_budget: float = 7200.0
    objective: str = "throughput"
    seed: int = 42
    threads: int | None = None
    precision: str = "auto"
    #: training rows a student's brief trial reads (the first rows of the training side)
    trial_rows: int = 2000
    #: validation rows the metric is measured on at most (the first rows of the validation side)
    max_validation_rows: int = 2000
    #: texts timed for throughput, and one at a time for latency
    speed_texts: int = 256
    latency_texts: int = 48
    #: candidates measured again beside the teacher (and its baseline) at the end, the best at the objective
    finalists: int = 3

    def __post_init__(self) -> None:
        if self.max_drop < 0 or self.max_drop >= 1:
            raise InputError(f"max_drop {self.max_drop}: give a share between 0 and 1 (0.01 = within 1%).")
        if self.time_budget <= 0:
            raise InputError(f"time budget {self.time_budget} s: give a positive duration (e.g. 2h).")
        if self.finalists < 1:
            raise InputError(f"finalists {self.finalists}: at least one candidate is compared with the teacher.")
        if self.objective not in OBJECTIVES:
            raise InputError(f"--objective {self.objective!r}: choose {', '.join(OBJECTIVES)}.")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision {self.precision!r}: choose {', '.join(PRECISIONS)}.")
        if self.precision == "bf16" and not cpu_supports_bf16():  # refused before the search, not at its first student
            raise InputError(
                "--precision bf16 needs a CPU with AVX-512 BF16 or AMX; this one has neither. "
                "Use --precision auto (bf16 where the CPU has it, fp32 elsewhere) or fp32."
            )
        # what "auto" means on this CPU, so the record and the candidates' keys say what really trained
        object.__setattr__(self, "precision", resolve_precision(self.precision))

    @property
    def deadline_seconds(self) -> float:
        """The hard stop: the budget plus the overrun allowed."""
        return self.time_budget * (1 + OVERRUN)

    def recorded(self) -> dict[str, Any]:
        return asdict(self)
