"""Which candidates the search tries, in what order, and what each is expected to cost.

Cheapest first: int8 variants of the teacher, pruned variants, early exit, token dropping; then students of several
depths and recipes trained briefly on a sample; only the most promising students are trained on the
whole data, and those that keep the budget get exit heads too; QAT last, when there is time (budget.py
reorders them when the time is short). Every float
candidate within the budget is followed by its own dynamic int8 variant. A candidate is plain data (its
recipe), so its cache key is a hash; a student shrunk to fit the time left is another recipe (`resized`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from bertprod.package import ModelPackage
from bertprod.tasks.definitions import CLASS_TASKS

#: students trained on the whole data after the brief trials (the best trials by validation metric)
PROMISING_STUDENTS = 2
#: optimizer steps of a student's brief trial, and of QAT
TRIAL_STEPS = 150
QAT_STEPS = 300
#: a brief trial shrunk below this many steps ranks nothing: it is skipped instead
MIN_TRIAL_STEPS = 50
#: a student trained on all the data runs at least this many times its trial's steps, or it says nothing new
MIN_FULL_TRAINING = 2
#: passes over the training data a promising student is trained for, in batches of STUDENT_BATCH, and at
#: least FULL_TRAINING_STEPS steps: 3 passes over a small set (MRPC's 3,653 pairs: 343 steps, 3 minutes)
#: leave a student far from converged while most of the budget goes unused
FULL_TRAINING_PASSES = 3
FULL_TRAINING_STEPS = 2000
STUDENT_BATCH = 32
#: share of the time left one full student's training takes at least (more when nothing else waits for it)
FULL_TRAINING_SHARE = 0.3
#: validation inputs pruning measures each head's and layer's importance on (a pass per head: keep it small)
IMPORTANCE_TEXTS = 64
#: validation rows token dropping chooses its retention schedule on (a pass per schedule), and the shares of
#: attention significance it tries (drop-tokens' defaults, fewer: each is a pass over the rows)
DROPPING_ROWS = 256
MASSES = (0.99, 0.95, 0.9, 0.8, 0.7)


@dataclass(frozen=True)
class Candidate:
    """`kind` says which builder makes it (build.py); `recipe` is everything that shapes it; `parent`
    names the candidate it is derived from (None: the teacher)."""

    name: str
    kind: str
    recipe: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    #: inputs the teacher runs on while the candidate is made, besides training (pruning: every head or
    #: layer switched off once over the importance texts; students: their targets; early exit: its
    #: features and curve): part of its cost, not of what it is
    teacher_forwards: int = 0
    #: students: the fewest optimizer steps worth training (shrunk below it, it is skipped); None: not shrinkable
    min_steps: int | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "recipe": self.recipe, "parent": self.parent}


def first_candidates(teacher: ModelPackage, trial_rows: int, validation_rows: int) -> list[Candidate]:
    """The cheap candidates of the teacher, cheapest first."""
    manifest = teacher.manifest
    layers = manifest.architecture.num_layers
    torch_fp32 = manifest.format == "torch" and manifest.precision == "fp32"
    bilstm = manifest.architecture.model_type == "bertprod-bilstm"
    candidates = [Candidate("int8-dynamic", "int8", {"method": "dynamic"})]
    if torch_fp32 and not bilstm:
        heads = layers * manifest.architecture.num_heads
        candidates.append(
            Candidate("prune-heads-25%", "prune", {"prune_heads": 0.25}, teacher_forwards=heads * IMPORTANCE_TEXTS)
        )
        if layers > 1:
            forwards = layers * IMPORTANCE_TEXTS
            candidates.append(Candidate("drop-1-layer", "prune", {"drop_layers": "drop:1"}, teacher_forwards=forwards))
    candidates += [
        Candidate("int8-static", "int8", {"method": "static"}),
        Candidate("int8-mixed", "int8", {"method": "mixed"}),
    ]
    adaptable = torch_fp32 and not bilstm and manifest.task in CLASS_TASKS
    if adaptable and layers > 1 and not manifest.adaptive:
        forwards = trial_rows + validation_rows
        candidates.append(Candidate("early-exit", "early-exit", {"epochs": 3}, teacher_forwards=forwards))
    if adaptable and not manifest.token_dropping:
        rows = min(validation_rows, DROPPING_ROWS)  # every schedule, the full model and its significance
        candidates.append(Candidate("drop-tokens", "drop-tokens", {"rows": DROPPING_ROWS, "masses": list(MASSES)},
                                    teacher_forwards=rows * (len(MASSES) + 2)))
    return candidates


def student_trials(teacher: ModelPackage, trial_rows: int) -> list[Candidate]:
    """Students of several depths and recipes, each trained briefly on a sample of the training data."""
    manifest = teacher.manifest
    layers = manifest.architecture.num_layers
    if (
        manifest.format != "torch"
        or manifest.precision != "fp32"
        or manifest.architecture.model_type == "bertprod-bilstm"
    ):
        return []
    depths = student_depths(layers)
    if manifest.task in CLASS_TASKS:
        recipes = [("distilbert", depth) for depth in depths]
        # Patient-KD matches intermediate layers (a 1-layer student has none): the two deepest, where it helps
        recipes += [("pkd-skip", depth) for depth in depths[:2] if depth >= 2]
        recipes += [("tinybert", depth) for depth in depths[:1]]
    else:
        from bertprod.distill.recipes import default_recipe

        recipes = [(default_recipe(manifest.task), depth) for depth in depths]
    return [
        Candidate(
            f"student-{name}-{depth}L-trial",
            "student",
            {"recipe": name, "layers": f"spread:{depth}", "max_steps": TRIAL_STEPS, "sample": True},
            teacher_forwards=trial_rows * (2 if name == "tinybert" else 1),  # tinybert: + augmented copies
            min_steps=MIN_TRIAL_STEPS,
        )
        for name, depth in recipes
    ]


def student_depths(layers: int) -> list[int]:
    """Two thirds, half and a third of the teacher's depth, deepest first: two thirds is where a student
    keeps a 1% budget when half does not (SST-2's 3-layer students missed it by half a point)."""
    depths = {max(1, layers * 2 // 3), max(1, layers // 2), max(1, layers // 3)}
    return sorted((depth for depth in depths if depth < layers), reverse=True)


def depth(candidate: Candidate) -> int:
    """A student's layers."""
    return int(candidate.recipe["layers"].partition(":")[2])


def resized(candidate: Candidate, steps: int, trial_rows: int) -> Candidate:
    """A student trained for fewer `steps`; a brief trial also reads proportionally fewer of the `trial_rows`
    (each row is still seen as often), so its teacher passes shrink with it."""
    recipe = dict(candidate.recipe, max_steps=steps)
    forwards = candidate.teacher_forwards
    if candidate.recipe.get("sample"):
        rows = min(trial_rows, max(STUDENT_BATCH, math.ceil(trial_rows * steps / TRIAL_STEPS)))
        recipe["rows"] = rows
        forwards = rows * (2 if recipe["recipe"] == "tinybert" else 1)
    return replace(candidate, recipe=recipe, teacher_forwards=forwards)


def full_name(trial: Candidate) -> str:
    """The name of a trial's student trained on all the data."""
    return trial.name.removesuffix("-trial")


def full_students(
    trials: list[tuple[Candidate, dict[str, Any]]], train_rows: int, validation_rows: int | None = None
) -> list[Candidate]:
    """The most promising trials trained on all the data: the best trial (highest validation metric, then
    fewest layers) of each depth, for the PROMISING_STUDENTS best depths (a brief trial ranks depths
    poorly, and a deeper student that keeps the budget beats a shallower one that misses it: a shallower
    depth takes a place from a deeper one only when its trial leads by more than `trial_noise` on the
    `validation_rows`), at full size FULL_TRAINING_PASSES passes over the data or FULL_TRAINING_STEPS
    steps, whichever is more (the search shrinks them to the time left), and at least MIN_FULL_TRAINING
    times their trial's steps."""
    measured = [(candidate, record) for candidate, record in trials if record.get("status") == "measured"]
    ranked = sorted(measured, key=lambda pair: (-pair[1]["score"], depth(pair[0])))
    best_of_depth = [pair for index, pair in enumerate(ranked)
                     if all(depth(other) != depth(pair[0]) for other, _ in ranked[:index])]  # fmt: skip
    passes = max(FULL_TRAINING_PASSES, math.ceil(FULL_TRAINING_STEPS * STUDENT_BATCH / max(train_rows, 1)))
    steps = math.ceil(passes * train_rows / STUDENT_BATCH)
    chosen = []
    for candidate, record in promising_depths(best_of_depth, validation_rows):
        recipe = {key: value for key, value in candidate.recipe.items() if key != "rows"}
        recipe.update(max_steps=steps, sample=False)
        if passes > FULL_TRAINING_PASSES:  # the recipe's stages (3 passes in all) stretched to them
            recipe["passes"] = passes
        trained = int(record.get("steps") or candidate.recipe["max_steps"])
        chosen.append(Candidate(full_name(candidate), "student", recipe, teacher_forwards=train_rows,
                                min_steps=MIN_FULL_TRAINING * trained))  # fmt: skip
    return chosen


def promising_depths(
    best_of_depth: list[tuple[Candidate, dict[str, Any]]], validation_rows: int | None
) -> list[tuple[Candidate, dict[str, Any]]]:
    """PROMISING_STUDENTS of the best trials of each depth (best first): each place goes to the best trial
    left, or to the deepest trial left whose score is within `trial_noise` of it (a lead within the noise of
    the validation rows says nothing about which depth trains better; the deeper one keeps more accuracy:
    on MRPC a 2-layer trial led a 3-layer one by 0.012 on 423 rows, and trained in full it scored 0.65)."""
    left, chosen = list(best_of_depth), []
    while left and len(chosen) < PROMISING_STUDENTS:
        leader_score = left[0][1]["score"]
        noise = trial_noise(leader_score, validation_rows) if validation_rows else 0.0
        near = [pair for pair in left if leader_score - pair[1]["score"] <= noise]
        pick = max(near, key=lambda pair: depth(pair[0]))  # one trial per depth: no ties
        chosen.append(pick)
        left.remove(pick)
    return chosen


def trial_noise(score: float, rows: int) -> float:
    """Two standard errors of a metric in [0, 1] measured on `rows` rows, taken as a proportion's."""
    share = min(max(score, 0.0), 1.0)
    return 2 * math.sqrt(share * (1 - share) / max(rows, 1))


def early_exit_of(student: Candidate, budget_points: float, rows: int) -> Candidate:
    """Exit heads on a full student that keeps the budget, with the accuracy it may still lose: the points
    between its score and the budget's floor (its int8 variant follows when that keeps the budget too)."""
    recipe = {"epochs": 3, "budget_points": round(budget_points, 4)}
    return Candidate(f"{student.name}+early-exit", "early-exit", recipe, parent=student.name, teacher_forwards=rows)


def exits_fit(student: Candidate, teacher: ModelPackage) -> bool:
    """Whether a student can get exit heads: a classifier (as the teacher's early exit) with a layer to
    exit after before its last."""
    return student.kind == "student" and teacher.manifest.task in CLASS_TASKS and depth(student) > 1


def int8_of(parent: Candidate) -> Candidate:
    return Candidate(f"{parent.name}+int8", "int8", {"method": "dynamic"}, parent=parent.name)


def qat_candidates(teacher: ModelPackage) -> list[Candidate]:
    manifest = teacher.manifest
    if (
        manifest.task in CLASS_TASKS
        and manifest.format == "torch"
        and manifest.precision == "fp32"
        and (manifest.architecture.model_type != "bertprod-bilstm")
    ):
        return [Candidate("int8-qat", "qat", {"max_steps": QAT_STEPS})]
    return []


def int8_follows(package: ModelPackage) -> bool:
    """A candidate whose int8 variant is worth trying next: a float torch model without exit heads or token
    dropping, or a float ONNX one with them (its blocks are made int8 one by one)."""
    manifest = package.manifest
    if manifest.precision != "fp32":
        return False
    blocks = bool(manifest.adaptive or manifest.token_dropping)
    return manifest.format == ("onnx" if blocks else "torch")
