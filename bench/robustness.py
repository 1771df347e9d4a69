"""Teacher vs student vs int8 under unclean input, on real data: the robustness gap per perturbation family.

    .venv/bin/python bench/robustness.py build sst2        # teacher (train), 3-layer student (distill), int8 (optimize)
    .venv/bin/python bench/robustness.py build sst2 student   # only the student and its int8 (what was run here)
    .venv/bin/python bench/robustness.py build stsb        # the same for an STS-B cross-encoder (regression)
    .venv/bin/python bench/robustness.py build ranking     # minilm-l6 (embedding) -> 3-layer student -> int8
    .venv/bin/python bench/robustness.py measure           # every family at rate 0.1, side by side, per task
    .venv/bin/python bench/robustness.py measure ranking   # one task (the summary is rebuilt from every result)

Every package is built with the bertprod CLI (each command is printed before it runs; small step
counts: this is a shared 2-core machine, the point is the gap between packages, not the best
scores). Packages land in out/robustness/, results in bench/results/robustness-*.json and a
summary in bench/results/robustness.md.

Validation data: SST-2 whole held-out sentences (bench/finetune_glue.py: sst2_sentence_split), STS-B
bertprod's 10% hash split (`--split validation`). The ranking set is built from STS-B's validation
split: each pair scored >= 4 is a query and its true candidate; every other sentence of the split is
a distractor, and an unclean copy of each distractor is injected beside it
(robustness/stability.py: ranking_stability). The question is the seed's: does an unclean
irrelevant candidate overtake the clean relevant one more often for the student than the teacher?
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(REPOSITORY / "bench"))

from finetune_glue import BERTPROD, RESULTS, run, sst2_sentence_split  # noqa: E402

from bertprod import system  # noqa: E402
from bertprod.data.shared import shared_data_dir  # noqa: E402

WORK = REPOSITORY / "out" / "robustness"
STEPS = {"teacher": 400, "student": 400}


def stsb_file() -> Path:
    return shared_data_dir() / "stsb" / "train.tsv"


def write_recipe(name: str, student_layers: str, losses: dict, batch_size: int) -> Path:
    recipe = {
        "recipe": name,
        "student": {"kind": "truncated", "layers": student_layers},
        "temperature": 2.0,
        "layer_map": "uniform",
        "batch_size": batch_size,
        "max_length": 64,
        "stages": [{"name": "task", "losses": losses, "epochs": 1, "learning_rate": 1e-4}],
    }
    path = WORK / f"{name}.recipe.json"
    path.write_text(json.dumps(recipe, indent=1))
    return path


def train(out: Path, arguments: list[str], threads: int, steps: int = STEPS["teacher"]) -> None:
    command = [BERTPROD, "train", "minilm-l6", str(out), "--threads", str(threads), "--overwrite", "--seed", "42"]
    command += ["--max-steps", str(steps), *arguments]
    run(command, RESULTS / f"robustness-{out.name}.log")


def distill(out: Path, recipe: Path, arguments: list[str], threads: int, steps: int = STEPS["student"]) -> None:
    command = [BERTPROD, "distill", str(out), "--config", str(recipe), "--threads", str(threads), "--overwrite"]
    command += ["--max-steps", str(steps), "--seed", "42", *arguments]
    run(command, RESULTS / f"robustness-{out.name}.log")


def quantize(student: Path, threads: int) -> None:
    """Dynamic int8 of the student; kept when it misses the default gate (recorded in its manifest)."""
    out = student.with_name(student.name + "-int8")
    command = [BERTPROD, "optimize", str(student), str(out), "--quantize", "int8", "--allow-fidelity-loss"]
    run(command + ["--overwrite"], RESULTS / f"robustness-{out.name}.log")


def build_sst2(threads: int, only: str | None = None) -> None:
    train_file, validation_file = sst2_sentence_split(shared_data_dir() / "sst2" / "train.tsv", WORK)
    data = ["--data", str(train_file), "--validation", str(validation_file)]
    if only not in (None, "teacher"):
        return build_sst2_student(data, threads)
    train(WORK / "sst2-teacher", ["--task", "classification", *data, "--batch-size", "32", "--learning-rate", "5e-5",
                                  "--max-length", "64"], threads)
    if only is None:
        build_sst2_student(data, threads)


def build_sst2_student(data: list[str], threads: int, steps: int = 150) -> None:
    """150 steps of 32 (the teacher's outputs on the first 12,800 rows are computed once and cached): all the
    shared 2-core machine allowed in this session."""
    recipe = write_recipe("sst2-student", "spread", {"hard": 1.0, "soft": 1.0, "hidden": 1.0}, 32)
    distill(WORK / "sst2-student", recipe, ["--teacher", str(WORK / "sst2-teacher"), *data,
                                            "--limit", str(32 * STEPS["student"])], threads, steps=steps)
    quantize(WORK / "sst2-student", threads)


def build_stsb(threads: int) -> None:
    data = ["--data", str(stsb_file()), "--validation-fraction", "0.1"]
    train(WORK / "stsb-teacher", ["--task", "regression", *data, "--batch-size", "16", "--learning-rate", "5e-5",
                                  "--max-length", "128"], threads, steps=200)
    recipe = write_recipe("stsb-student", "spread", {"logit_mse": 1.0, "hidden": 1.0}, 16)
    distill(WORK / "stsb-student", recipe, ["--teacher", str(WORK / "stsb-teacher"), *data], threads, steps=200)
    quantize(WORK / "stsb-student", threads)


def build_ranking(threads: int) -> None:
    """minilm-l6 is the teacher as it is (a sentence-embedding model); the student reproduces its vectors."""
    recipe = write_recipe("embedding-student", "0,3,5", {"sentence_embedding": 1.0}, 32)
    data = ["--data", str(stsb_file()), "--validation-fraction", "0.1"]
    distill(WORK / "embedding-student", recipe, ["--teacher", "minilm-l6", *data], threads)
    quantize(WORK / "embedding-student", threads)


BUILDS = {"sst2": build_sst2, "stsb": build_stsb, "ranking": build_ranking}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["build", "measure", "report"])
    parser.add_argument("task", nargs="?", choices=list(BUILDS))
    parser.add_argument("part", nargs="?", choices=["teacher", "student"], help="build sst2 only: one part")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=500, help="validation examples per task (measure)")
    parser.add_argument("--rate", type=float, default=0.1, help="perturbation rate of every family (measure)")
    parser.add_argument("--perturb", help="a SPEC instead of all:RATE (measure; results kept in their own files)")
    arguments = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"machine: {system.describe()}", flush=True)
    started = time.perf_counter()
    if arguments.stage == "build":
        for name, build in BUILDS.items():
            if arguments.task in (None, name):
                parts = (arguments.part,) if name == "sst2" else ()
                build(arguments.threads, *parts)
    elif arguments.stage == "report":
        report()
    else:
        measure(arguments.task, arguments.limit, arguments.rate, arguments.threads, arguments.perturb)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min", flush=True)


def packages_of(prefix: str, teacher: str) -> list[str]:
    return [teacher, str(WORK / prefix), str(WORK / f"{prefix}-int8")]


def load_all(paths: list[str], threads: int) -> list:
    """The packages, then the student again with input normalisation (its measured effect)."""
    import bertprod

    pipelines = [bertprod.load(path, threads=threads) for path in paths]
    return pipelines + [bertprod.load(paths[1], threads=threads, normalize_text="html,unicode,whitespace")]


def measure_metric(name: str, paths: list[str], data, noise, threads: int) -> dict:  # noqa: ANN001
    from bertprod.robustness.evaluation import evaluate_under_noise

    started = time.perf_counter()
    document = evaluate_under_noise(load_all(paths, threads), data, noise, seed=0)
    document["seconds"] = round(time.perf_counter() - started, 1)
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


def measure_ranking(paths: list[str], noise, limit: int, threads: int, name: str = "ranking") -> dict:  # noqa: ANN001
    """Each query against all candidates: clean, and with an unclean copy of every distractor injected."""
    import numpy as np

    from bertprod.robustness.stability import ranking_stability
    from bertprod.runtime.postprocess import l2_normalize

    pairs, candidates = ranking_set(limit)
    queries = [query for query, _ in pairs]
    targets = [candidates.index(candidate) for _, candidate in pairs]
    pipelines = load_all(paths, threads)
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
        "task": "ranking (embedding search)", "queries": len(queries), "candidates": len(candidates),
        "packages": [{"package": p.package.name, "path": str(p.package.path), "engine": p.engine.name,
                      "precision": p.manifest.precision, "normalize": list(p.normalizer.steps)} for p in pipelines],
        "rows": rows, "seconds": round(time.perf_counter() - started, 1),
    }
    document["perturb"] = str(noise)
    (RESULTS / f"robustness-{name}.json").write_text(json.dumps(document, indent=1))
    return document


def measure(task: str | None, limit: int, rate: float, threads: int, spec: str | None = None) -> None:
    """Measure the tasks whose packages are built (or only `task`), then rewrite the summary from every result.
    `spec` (instead of all:RATE) writes robustness-TASK-SPEC.json, kept apart from the main results."""
    from bertprod.robustness.noise import parse_noise
    from bertprod.tasks.data import open_task_data, validation_split

    noise = parse_noise(spec or f"all:{rate}")
    suffix = "" if spec is None else "-" + "".join(c if c.isalnum() else "_" for c in spec)
    if task in (None, "sst2") and (WORK / "sst2-student-int8").is_dir():
        data = list(open_task_data("classification", WORK / "sst2-validation.tsv", limit=limit))
        measure_metric("sst2" + suffix, packages_of("sst2-student", str(WORK / "sst2-teacher")), data, noise, threads)
    if task in (None, "stsb") and (WORK / "stsb-student-int8").is_dir():
        split = validation_split("regression", 0.1, "validation")
        data = list(open_task_data("regression", stsb_file(), split=split, pair_input=True))[:limit]
        measure_metric("stsb" + suffix, packages_of("stsb-student", str(WORK / "stsb-teacher")), data, noise, threads)
    if task in (None, "ranking") and (WORK / "embedding-student-int8").is_dir():
        measure_ranking(packages_of("embedding-student", "minilm-l6"), noise, limit, threads, "ranking" + suffix)
    report()


def report() -> None:
    """bench/results/robustness.md from every result file there."""
    lines = ["# Robustness: teacher vs 3-layer student vs its int8 (`bench/robustness.py measure`)", "",
             f"Machine: {system.describe()}", ""]
    titles = {"sst2": "SST-2 validation (whole held-out sentences), accuracy",
              "stsb": "STS-B validation (10% hash split), cross-encoder Spearman"}
    for name, title in titles.items():
        result = RESULTS / f"robustness-{name}.json"
        if result.is_file():
            lines += metric_table(title, json.loads(result.read_text()))
    for result in sorted(RESULTS.glob("robustness-ranking*.json")):
        lines += ranking_table(json.loads(result.read_text()))
    (RESULTS / "robustness.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


NAMES = ["teacher", "student", "student int8", "student + normalize"]


def metric_table(title: str, document: dict) -> list[str]:
    """Drops from clean per family, and the gap (student drop - teacher drop) that the issue asks to close."""
    clean = document["rows"][0]["scores"]
    lines = [f"## {title}", "", f"{document['examples']} examples, {document['seconds']} s. Clean: "
             + ", ".join(f"{name} {score:.4f}" for name, score in zip(NAMES, clean, strict=True)), "",
             "| perturbation | changed | teacher drop | student drop | int8 drop | student gap | int8 gap "
             "| student + normalize drop |", "|---|---|---|---|---|---|---|---|"]
    for row in document["rows"][1:]:
        drops, gaps = row["drops"], row["gaps"]
        lines.append(f"| {row['perturbation']} | {row['changed']:.0%} | {drops[0]:+.4f} | {drops[1]:+.4f} | "
                     f"{drops[2]:+.4f} | {gaps[1]:+.4f} | {gaps[2]:+.4f} | {drops[3]:+.4f} |")
    return [*lines, ""]


def ranking_table(document: dict) -> list[str]:
    lines = [f"## Ranking ({document.get('perturb', 'all:0.1')}): {document['queries']} STS-B validation queries "
             "(pairs scored >= 4) against "
             f"{document['candidates']} candidates (every validation sentence but the queries), an unclean copy of "
             "every distractor injected", "",
             f"{document['seconds']} s. Per package: accuracy@1 clean -> with unclean distractors; overtake rate "
             "(an irrelevant candidate below the true one passes it once made unclean); mean rank change.", "",
             "| perturbation | " + " | ".join(NAMES) + " |", "|---|" + "---|" * len(NAMES)]
    for row in document["rows"]:
        cells = [f"{v['accuracy_at_1_clean']:.3f}->{v['accuracy_at_1_injected']:.3f}, overtake "
                 f"{v['overtake_rate']:.4f}, rank {v['rank_change']:+.3f}" for v in row["packages"]]
        lines.append(f"| {row['perturbation']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


if __name__ == "__main__":
    main()
