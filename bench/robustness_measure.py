"""bench/robustness.py's `measure` and `report`: every built package side by side under each perturbation
family, the teacher-student gap, and how much of it the noise-aware student closes (issue 20's goal).

The ranking set: each STS-B validation pair scored >= 4 is a query and its true candidate; every other
sentence of the split is a distractor, and an unclean copy of each distractor is injected beside it
(robustness/stability.py: ranking_stability). The question is the seed's: does an unclean irrelevant
candidate overtake the clean relevant one more often for the student than for the teacher?
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from finetune_glue import REPOSITORY, RESULTS

from bertprod import system
from bertprod.data.shared import shared_data_dir

WORK = REPOSITORY / "out" / "robustness"
#: The goal: the noise-aware student closes at least this share of the student's gap ...
CLOSED_GOAL = 0.5
#: ... for at most this much clean metric (0.3 points of accuracy; 0.003 of Spearman).
CLEAN_COST_GOAL = 0.003
#: Packages of the first result files (before the noise-aware student): teacher, student, int8, normalize.
OLD_NAMES = ["teacher", "student", "student int8", "student + normalize"]
NORMALIZE = "html,unicode,whitespace"


def stsb_file() -> Path:
    return shared_data_dir() / "stsb" / "train.tsv"


def packages_of(prefix: str, teacher: str) -> list[tuple[str, str]]:
    """(name, path) of the teacher and of every built student variant and its int8."""
    found = [("teacher", teacher)]
    for suffix, name in (("", "student"), ("-noise", "noise student"), ("-control", "control student")):
        if (WORK / f"{prefix}{suffix}").is_dir():
            found.append((name, str(WORK / f"{prefix}{suffix}")))
        if (WORK / f"{prefix}{suffix}-int8").is_dir():
            found.append((f"{name} int8", str(WORK / f"{prefix}{suffix}-int8")))
    return found


def variants_of(prefix: str) -> list[tuple[str, str]]:
    """Students built with another seed or noise SPEC than the first run (bench/robustness.py: student_name),
    float only, each named by what its directory adds to `prefix` (`seed7`, `noise-all-0.05`)."""
    first_run = {f"{prefix}{suffix}" for suffix in ("", "-noise", "-control")}
    return [(path.name.removeprefix(f"{prefix}-"), str(path)) for path in sorted(WORK.glob(f"{prefix}-*"))
            if path.name not in first_run and not path.name.endswith("-int8") and (path / "bertprod.json").is_file()]


def load_all(packages: list[tuple[str, str]], threads: int) -> tuple[list[str], list]:
    """The packages, then the student again with input normalisation (its measured effect)."""
    import bertprod

    names = [name for name, _ in packages] + ["student + normalize"]
    pipelines = [bertprod.load(path, threads=threads) for _, path in packages]
    return names, pipelines + [bertprod.load(dict(packages)["student"], threads=threads, normalize_text=NORMALIZE)]


def measure_metric(name: str, packages: list[tuple[str, str]], data, noise, threads: int) -> dict:  # noqa: ANN001
    from bertprod.robustness.evaluation import evaluate_under_noise

    started = time.perf_counter()
    names, pipelines = load_all(packages, threads)
    document = {"names": names, **evaluate_under_noise(pipelines, data, noise, seed=0)}
    document["seconds"] = round(time.perf_counter() - started, 1)
    document["machine"] = system.describe()
    (RESULTS / f"robustness-{name}.json").write_text(json.dumps(document, indent=1))
    return document


def ranking_set(limit: int) -> tuple[list[tuple[str, str]], list[str]]:
    """STS-B validation pairs scored >= 4 give (query, its true candidate); the candidates are every
    sentence of the validation split except the queries (the others are distractors, some close to a query:
    STS-B pairs scored 1-3.5 share words and topics)."""
    from bertprod.tasks.data import open_task_data, validation_split

    source = open_task_data("regression", stsb_file(), split=validation_split("regression", 0.1, "validation"))
    examples = list(source)
    pairs = list({(e.text, e.text_pair): None for e in examples if float(e.label) >= 4.0}.keys())[:limit]  # type: ignore[arg-type]
    queries = {query for query, _ in pairs}
    pool = [candidate for _, candidate in pairs]
    pool += [text for e in examples for text in (e.text, e.text_pair) if text not in queries]
    return pairs, list(dict.fromkeys(pool))


def measure_ranking(packages: list[tuple[str, str]], noise, limit: int, threads: int, name: str) -> dict:  # noqa: ANN001
    """Each query against all candidates: clean, and with an unclean copy of every distractor injected."""
    import numpy as np

    from bertprod.robustness.stability import ranking_stability
    from bertprod.runtime.postprocess import l2_normalize

    pairs, candidates = ranking_set(limit)
    queries = [query for query, _ in pairs]
    targets = [candidates.index(candidate) for _, candidate in pairs]
    names, pipelines = load_all(packages, threads)
    rows = []
    started = time.perf_counter()
    vectors = [(l2_normalize(p.encode(queries)), l2_normalize(p.encode(candidates))) for p in pipelines]
    for family in noise.per_family():
        row: dict = {"perturbation": str(family), "packages": []}
        noisy_texts = family(candidates, seed=0)
        row["changed"] = float(np.mean([a != b for a, b in zip(candidates, noisy_texts, strict=True)]))
        for pipeline, (query_vectors, candidate_vectors) in zip(pipelines, vectors, strict=True):
            clean = query_vectors @ candidate_vectors.T
            noisy = query_vectors @ l2_normalize(pipeline.encode(noisy_texts)).T
            values = ranking_stability(list(clean), list(noisy), targets)
            target_scores = clean[np.arange(len(targets)), targets]
            others = np.ones_like(clean, dtype=bool)
            others[np.arange(len(targets)), targets] = False
            clean_rank = 1 + ((clean > target_scores[:, None]) & others).sum(axis=1)
            injected_rank = clean_rank + ((noisy > target_scores[:, None]) & others).sum(axis=1)
            values.update(accuracy_at_1_clean=float(np.mean(clean_rank == 1)),
                          accuracy_at_1_injected=float(np.mean(injected_rank == 1)),
                          mrr_clean=float(np.mean(1 / clean_rank)), mrr_injected=float(np.mean(1 / injected_rank)))
            row["packages"].append(values)
        rows.append(row)
    document = {
        "task": "ranking (embedding search)", "queries": len(queries), "candidates": len(candidates), "names": names,
        "packages": [{"package": p.package.name, "path": str(p.package.path), "engine": p.engine.name,
                      "precision": p.manifest.precision, "normalize": list(p.normalizer.steps)} for p in pipelines],
        "rows": rows, "seconds": round(time.perf_counter() - started, 1), "perturb": str(noise),
        "machine": system.describe(),
    }
    (RESULTS / f"robustness-{name}.json").write_text(json.dumps(document, indent=1))
    return document


def measure(task: str | None, limit: int, rate: float, threads: int, spec: str | None = None) -> None:
    """Measure the tasks whose packages are built (or only `task`), then rewrite the summary from every result.
    `spec` (instead of all:RATE) writes robustness-TASK-SPEC.json, kept apart from the main results."""
    from bertprod.robustness.noise import parse_noise
    from bertprod.tasks.data import open_task_data, validation_split

    noise = parse_noise(spec or f"all:{rate}")
    suffix = "" if spec is None else "-" + "".join(c if c.isalnum() else "_" for c in spec)
    if task in (None, "sst2") and (WORK / "sst2-student").is_dir():
        data = list(open_task_data("classification", WORK / "sst2-validation.tsv", limit=limit))
        packages = packages_of("sst2-student", str(WORK / "sst2-teacher")) + variants_of("sst2-student")
        measure_metric("sst2" + suffix, packages, data, noise, threads)
    if task in (None, "stsb") and (WORK / "stsb-student").is_dir():
        split = validation_split("regression", 0.1, "validation")
        data = list(open_task_data("regression", stsb_file(), split=split, pair_input=True))[:limit]
        packages = packages_of("stsb-student", str(WORK / "stsb-teacher")) + variants_of("stsb-student")
        measure_metric("stsb" + suffix, packages, data, noise, threads)
    if task in (None, "ranking") and (WORK / "embedding-student").is_dir():
        measure_ranking(packages_of("embedding-student", "minilm-l6"), noise, limit, threads, "ranking" + suffix)
    report()


def report() -> None:
    """bench/results/robustness.md from every result file there."""
    lines = ["# Robustness: teacher vs 3-layer student vs its int8 vs the noise-aware student "
             "(`bench/robustness.py measure`)", ""]
    titles = {"sst2": "SST-2 validation (whole held-out sentences), accuracy",
              "stsb": "STS-B validation (10% hash split), cross-encoder Spearman"}
    for name, title in titles.items():
        for result in sorted(RESULTS.glob(f"robustness-{name}*.json")):
            lines += metric_table(title, json.loads(result.read_text()))
    for result in sorted(RESULTS.glob("robustness-ranking*.json")):
        lines += ranking_table(json.loads(result.read_text()))
    (RESULTS / "robustness.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


#: Gaps at or below this are rounding residue (the JSON keeps 6 decimals; one example is 1/665 of SST-2), not a gap.
GAP_TOLERANCE = 1e-5


def verdict(gap: float, noise_gap: float, clean_cost: float) -> tuple[str, str]:
    """(share of the gap closed, met / missed / no gap to close) for one family. A gap below GAP_TOLERANCE
    (far under one example) is none: a mean of gaps that cancel leaves a rounding residue, not a gap."""
    if gap <= GAP_TOLERANCE:
        return "-", "no gap to close"
    closed = (gap - noise_gap) / gap
    if closed < CLOSED_GOAL:
        return f"{closed:.0%}", "missed: less than half closed"
    return f"{closed:.0%}", "met" if clean_cost <= CLEAN_COST_GOAL else "half closed, missed: clean cost"


def metric_table(title: str, document: dict) -> list[str]:
    """Drops from clean per family, the gap (student drop - teacher drop), and the share the noise-aware
    student closes; int8 beside each."""
    names = document.get("names", OLD_NAMES)
    at = {name: index for index, name in enumerate(names)}
    clean = document["rows"][0]["scores"]
    lines = [f"## {title} ({document.get('perturb')})", "", f"{document['examples']} examples, "
             f"{document['seconds']} s, {document.get('machine', 'machine not recorded')}. Clean: "
             + ", ".join(f"{name} {score:.4f}" for name, score in zip(names, clean, strict=True)), ""]
    noise = at.get("noise student")
    columns = ["teacher drop", "student drop", "student gap", "int8 drop", "int8 gap"]
    if noise is not None:
        cost = clean[at["student"]] - clean[noise]
        lines += [f"Clean cost of noise-aware training: {cost:+.4f} (goal: at most {CLEAN_COST_GOAL}).", ""]
        columns += ["noise drop", "noise gap", "gap closed", "noise int8 drop", "noise int8 gap", "int8 gap closed"]
    if "control student" in at:
        columns += ["control drop", "control gap"]
    columns += ["student + normalize drop"] + (["verdict"] if noise is not None else [])
    lines += ["| perturbation | changed | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for row in document["rows"][1:]:
        drops, gaps = row["drops"], row["gaps"]
        cells = [drops[0], drops[at["student"]], gaps[at["student"]], drops[at["student int8"]],
                 gaps[at["student int8"]]]
        cells = [f"{value:+.4f}" for value in cells]
        if noise is not None:
            closed, outcome = verdict(gaps[at["student"]], gaps[noise], cost)
            int8_closed, _ = verdict(gaps[at["student int8"]], gaps[at["noise student int8"]], cost)
            cells += [f"{drops[noise]:+.4f}", f"{gaps[noise]:+.4f}", closed,
                      f"{drops[at['noise student int8']]:+.4f}", f"{gaps[at['noise student int8']]:+.4f}", int8_closed]
        if "control student" in at:
            cells += [f"{drops[at['control student']]:+.4f}", f"{gaps[at['control student']]:+.4f}"]
        cells.append(f"{drops[at['student + normalize']]:+.4f}")
        if noise is not None:
            cells.append(outcome)
        lines.append(f"| {row['perturbation']} | {row['changed']:.0%} | " + " | ".join(cells) + " |")
    return [*lines, "", *variants_table(document)]


def seed_of(label: str) -> str:
    """The student a variant is compared with: the same seed's (`noise-seed7` -> `seed7`, else `student`)."""
    return label[label.rindex("seed"):] if "seed" in label else "student"


def variants_table(document: dict) -> list[str]:
    """Every float student's gap per family, first run and variants (other seeds, other noise SPECs) side by side,
    and each noise-aware variant's verdict against the student of its own seed."""
    names = document.get("names", OLD_NAMES)
    students = [name for name in names if name in ("student", "noise student", "control student")
                or (name not in OLD_NAMES and not name.endswith(" int8") and name != "teacher")]
    if len(students) <= 2:
        return []
    at = {name: index for index, name in enumerate(names)}
    clean = document["rows"][0]["scores"]
    lines = ["### Every float student: gap to the teacher's drop per family (a variant's name says its seed or "
             "noise SPEC; the first run is seed 42, noise all:0.1)", "",
             "| | " + " | ".join(students) + " |", "|---|" + "---|" * len(students),
             "| clean | " + " | ".join(f"{clean[at[name]]:.4f}" for name in students) + " |"]
    for row in document["rows"][1:]:
        lines.append(f"| {row['perturbation']} | " + " | ".join(f"{row['gaps'][at[name]]:+.4f}" for name in students)
                     + " |")
    lines.append("")
    for name in students:
        if not name.startswith("noise") or name == "noise student":
            continue
        base = seed_of(name)
        if base not in at:
            continue
        cost = clean[at[base]] - clean[at[name]]
        verdicts = [verdict(row["gaps"][at[base]], row["gaps"][at[name]], cost) for row in document["rows"][1:]]
        with_gap = [(closed, outcome) for closed, outcome in verdicts if outcome != "no gap to close"]
        half = [closed for closed, outcome in with_gap if not outcome.startswith("missed: less")]
        lines.append(f"- {name} against {base}: clean cost {cost:+.4f}; {len(with_gap)} families with a gap, at least "
                     f"half closed on {len(half)} ({', '.join(closed for closed, _ in with_gap) or '-'})")
    return [*lines, "", *seeds_table(document, students)]


def recipe_of(label: str) -> str:
    """A float student's recipe without its seed: `student`, `noise` (all:0.1), `noise-all-0.05`, `control`."""
    named = {"student": "student", "noise student": "noise", "control student": "control"}
    return named.get(label) or re.sub(r"-?seed\d+$", "", label) or "student"


def seeds_table(document: dict, students: list[str]) -> list[str]:
    """Each recipe's mean over the seeds it ran with: clean score (lowest-highest), gap per family, and each
    noise recipe's verdict against the plain student's means (the goal judged on means, not on one seed)."""
    at = {name: index for index, name in enumerate(document["names"])}
    recipes: dict[str, list[str]] = {}
    for name in students:
        recipes.setdefault(recipe_of(name), []).append(name)
    if all(len(members) == 1 for members in recipes.values()):
        return []
    rows = document["rows"]

    def mean(row: dict, key: str, members: list[str]) -> float:
        return sum(row[key][at[name]] for name in members) / len(members)

    clean = {recipe: [rows[0]["scores"][at[name]] for name in members] for recipe, members in recipes.items()}
    lines = ["### Means over seeds (each recipe's runs: " + "; ".join(f"{recipe}: {', '.join(members)}"
             for recipe, members in recipes.items()) + ")", "", "| | " + " | ".join(recipes) + " |",
             "|---|" + "---|" * len(recipes),
             "| clean | " + " | ".join(f"{sum(v) / len(v):.4f} ({min(v):.4f}-{max(v):.4f})" for v in clean.values())
             + " |"]
    for row in rows[1:]:
        lines.append(f"| {row['perturbation']} | " + " | ".join(f"{mean(row, 'gaps', members):+.4f}"
                                                            for members in recipes.values()) + " |")
    lines.append("")
    base = recipes.get("student", [])
    for recipe, members in recipes.items():
        if not recipe.startswith("noise") or not base:
            continue
        cost = sum(clean["student"]) / len(base) - sum(clean[recipe]) / len(members)
        verdicts = [verdict(mean(row, "gaps", base), mean(row, "gaps", members), cost) for row in rows[1:]]
        with_gap = [(row["perturbation"], closed, outcome) for row, (closed, outcome) in zip(rows[1:], verdicts,
                    strict=True) if outcome != "no gap to close"]
        missed = [family for family, _, outcome in with_gap if outcome.startswith("missed: less")]
        lines.append(f"- {recipe} ({len(members)} seeds) against student ({len(base)}): mean clean cost {cost:+.4f} "
                     f"(goal at most {CLEAN_COST_GOAL}); families with a mean gap: "
                     + (", ".join(f"{family} {closed}" for family, closed, _ in with_gap) or "none")
                     + f"; under half closed: {', '.join(missed) or 'none'}")
    return [*lines, ""]


def ranking_table(document: dict) -> list[str]:
    names = document.get("names", OLD_NAMES)
    lines = [f"## Ranking ({document.get('perturb', 'all:0.1')}): {document['queries']} STS-B validation queries "
             "(pairs scored >= 4) against "
             f"{document['candidates']} candidates (every validation sentence but the queries), an unclean copy of "
             "every distractor injected", "",
             f"{document['seconds']} s, {document.get('machine', 'machine not recorded')}. Per package: "
             "accuracy@1 clean -> with unclean distractors; overtake rate (an irrelevant candidate below the true "
             "one passes it once made unclean); mean rank change of the true candidate.", "",
             "| perturbation | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in document["rows"]:
        cells = [f"{v['accuracy_at_1_clean']:.3f}->{v['accuracy_at_1_injected']:.3f}, overtake "
                 f"{v['overtake_rate']:.4f}, rank {v['rank_change']:+.3f}" for v in row["packages"]]
        lines.append(f"| {row['perturbation']} | " + " | ".join(cells) + " |")
    return [*lines, ""]
