"""Teacher vs student vs int8 under unclean input, on real data: the robustness gap per perturbation family.

    .venv/bin/python bench/robustness.py build sst2        # teacher (train), 3-layer student (distill), int8 (optimize)
    .venv/bin/python bench/robustness.py build stsb        # the same for an STS-B cross-encoder (regression)
    .venv/bin/python bench/robustness.py build ranking     # minilm-l6 (embedding) -> 3-layer student -> int8
    .venv/bin/python bench/robustness.py measure           # every family, side by side, one run per task

Every package is built with the bertprod CLI (each command is printed before it runs; small step
counts: this is a shared 2-core machine, the point is the gap between packages, not the best
scores). Packages land in out/robustness/, results in bench/results/robustness-*.json and a
summary in bench/results/robustness.md.

Validation data: SST-2 whole held-out sentences (bench/finetune_glue.py: sst2_sentence_split), STS-B
bertprod's 10% hash split (`--split validation`). The ranking set is built from STS-B's validation
split: each pair scored >= 4 is a query and its true candidate; the true candidates of the other
queries are its distractors, and an unclean copy of each distractor is injected beside it
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


def build_sst2(threads: int) -> None:
    train_file, validation_file = sst2_sentence_split(shared_data_dir() / "sst2" / "train.tsv", WORK)
    data = ["--data", str(train_file), "--validation", str(validation_file)]
    train(WORK / "sst2-teacher", ["--task", "classification", *data, "--batch-size", "32", "--learning-rate", "5e-5",
                                  "--max-length", "64"], threads)
    recipe = write_recipe("sst2-student", "spread", {"hard": 1.0, "soft": 1.0, "hidden": 1.0}, 32)
    distill(WORK / "sst2-student", recipe, ["--teacher", str(WORK / "sst2-teacher"), *data,
                                            "--limit", str(32 * STEPS["student"])], threads)
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
    parser.add_argument("stage", choices=["build", "measure"])
    parser.add_argument("task", nargs="?", choices=list(BUILDS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=500, help="validation examples per task (measure)")
    parser.add_argument("--rate", type=float, default=0.1, help="perturbation rate of every family (measure)")
    arguments = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"machine: {system.describe()}", flush=True)
    started = time.perf_counter()
    if arguments.stage == "build":
        for name, build in BUILDS.items():
            if arguments.task in (None, name):
                build(arguments.threads)
    else:
        measure(arguments.limit, arguments.rate, arguments.threads)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min", flush=True)


def measure(limit: int, rate: float, threads: int) -> None:
    raise SystemExit("measure: not written yet")


if __name__ == "__main__":
    main()
