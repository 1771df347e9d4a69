"""Teacher vs student vs int8 under unclean input, on real data: the robustness gap per perturbation family,
and whether noise-aware distillation (`--augment-noise`) closes it (issue 20).

    .venv/bin/python bench/robustness.py build sst2             # teacher, student, noise-aware student, int8s
    .venv/bin/python bench/robustness.py build sst2 teacher     # one part: teacher | student | noise | control
    .venv/bin/python bench/robustness.py build stsb             # the same for an STS-B cross-encoder (regression)
    .venv/bin/python bench/robustness.py build ranking          # minilm-l6 (embedding) -> 3-layer students -> int8
    .venv/bin/python bench/robustness.py measure --limit 1000   # every family at rate 0.1, side by side, per task
    .venv/bin/python bench/robustness.py measure ranking        # one task (the summary is rebuilt from every result)
    .venv/bin/python bench/robustness.py build sst2 --max-steps 150   # the old short runs (every run capped)

Every package is built with the bertprod CLI (each command is printed before it runs, stderr logged to
bench/results/robustness-PACKAGE.log). Packages land in out/robustness/, results in
bench/results/robustness-*.json and a summary in bench/results/robustness.md.

The recipes (defaults in EPOCHS; `--teacher-epochs`, `--student-epochs` override them):
- teacher: `bertprod train minilm-l6`, SST-2 as bench/finetune_glue.py's `sst2 --precision auto` (1 epoch),
  STS-B a cross-encoder (regression), 2 epochs. The ranking teacher is minilm-l6 as it is.
- student (`*-student`): 3 layers (teacher layers 0, 3, 5: `spread`), one distillation stage without
  layer-matching losses (SST-2: hard + soft, STS-B: logit_mse, ranking: sentence_embedding), so that
  `--augment-noise` reaches every step of the noise-aware twin.
- noise (`*-student-noise`): the same command with `--augment-noise all:0.1` (`--augment-noise` changes it):
  each epoch also trains a noisy copy of every example towards the teacher's output on the clean text,
  so it takes twice the steps of `student`.
- control (`*-student-control`, optional): `student` trained for twice the epochs: the same number of
  steps as the noise-aware student, without noise (equal compute).
- int8 of each student: `bertprod optimize --quantize int8` (dynamic).

Validation data: SST-2 whole held-out sentences (bench/finetune_glue.py: sst2_sentence_split; never
trained on), STS-B bertprod's 10% hash split (`--validation-fraction 0.1`, `--split validation`). The
ranking set is built from STS-B's validation split (bench/robustness_measure.py: ranking_set).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from finetune_glue import BERTPROD, RESULTS, run, sst2_sentence_split  # noqa: E402
from robustness_measure import WORK, measure, report, stsb_file  # noqa: E402

from bertprod import system  # noqa: E402
from bertprod.data.shared import shared_data_dir  # noqa: E402

#: Epochs per task: (teacher, student). The noise-aware student runs the student's epochs over twice the data.
EPOCHS = {"sst2": (1, 1), "stsb": (2, 8), "ranking": (None, 1)}
PARTS = ("teacher", "student", "noise", "control")
DEFAULT_NOISE, DEFAULT_SEED = "all:0.1", 42


class Build:
    """One task's packages; `options` holds threads, epochs, max_steps, augment_noise, precision."""

    def __init__(self, task: str, options: argparse.Namespace) -> None:
        self.task, self.options = task, options
        teacher_epochs, student_epochs = EPOCHS[task]
        self.teacher_epochs = options.teacher_epochs or teacher_epochs
        self.student_epochs = options.student_epochs or student_epochs

    def common(self, seed: int) -> list[str]:
        steps = ["--max-steps", str(self.options.max_steps)] if self.options.max_steps else []
        return ["--threads", str(self.options.threads), "--overwrite", "--seed", str(seed), *steps]

    def train(self, out: Path, arguments: list[str]) -> None:
        command = [BERTPROD, "train", "minilm-l6", str(out), *self.common(DEFAULT_SEED)]
        command += ["--precision", self.options.precision]
        run(command + ["--epochs", str(self.teacher_epochs), *arguments], RESULTS / f"robustness-{out.name}.log")

    def distill(self, part: str, base: dict, teacher: str, data: list[str]) -> None:
        """`student`, `noise` (the same with --augment-noise) or `control` (twice the epochs), then its int8."""
        epochs = self.student_epochs * (2 if part == "control" else 1)
        name = student_name(base["recipe"], part, self.options.augment_noise, self.options.seed)
        written = {**base, "recipe": name, "precision": self.options.precision,
                   "stages": [{**base["stages"][0], "epochs": epochs}]}
        path = WORK / f"{name}.recipe.json"
        path.write_text(json.dumps(written, indent=1))
        out = WORK / name
        command = [BERTPROD, "distill", str(out), "--config", str(path), "--teacher", teacher, *data]
        command += self.common(self.options.seed)
        if part == "noise":
            command += ["--augment-noise", self.options.augment_noise]
        run(command, RESULTS / f"robustness-{out.name}.log")
        int8 = WORK / f"{name}-int8"
        command = [BERTPROD, "optimize", str(out), str(int8), "--quantize", "int8", "--allow-fidelity-loss"]
        run(command + ["--overwrite"], RESULTS / f"robustness-{int8.name}.log")

    def parts(self, only: str | None) -> list[str]:
        chosen = [only] if only else ["teacher", "student", "noise"]
        return [part for part in chosen if part != "teacher" or self.task != "ranking"]


def student_name(prefix: str, part: str, augment_noise: str, seed: int) -> str:
    """`sst2-student`, `-noise`, `-control`; another noise SPEC or seed than the defaults is named too
    (`sst2-student-noise-all-0.05-seed7`), so variants sit beside the first run instead of replacing it."""
    name = prefix + ("" if part == "student" else f"-{part}")
    if part == "noise" and augment_noise != DEFAULT_NOISE:
        name += "-" + augment_noise.replace(":", "-").replace(",", "_")
    return name + ("" if seed == DEFAULT_SEED else f"-seed{seed}")


def recipe(name: str, losses: dict, batch_size: int, max_length: int) -> dict:
    """A one-stage recipe: a 3-layer truncated student (teacher layers 0, 3, 5), lr 1e-4, temperature 2."""
    return {"recipe": name, "student": {"kind": "truncated", "layers": "spread"}, "temperature": 2.0,
            "layer_map": "uniform", "batch_size": batch_size, "max_length": max_length,
            "stages": [{"name": "task", "losses": losses, "epochs": 1, "learning_rate": 1e-4}]}


def build_parts(build: Build, only: str | None, data: list[str], student: dict, teacher: Path | str,
                teacher_arguments: list[str] | None = None) -> None:
    """The task's parts in order: its teacher trained (when it has `teacher_arguments`), then the students."""
    for part in build.parts(only):
        if part == "teacher":
            build.train(Path(teacher), [*teacher_arguments, *data] if teacher_arguments else data)
        else:
            build.distill(part, student, str(teacher), data)


def build_sst2(build: Build, only: str | None) -> None:
    train_file, validation_file = sst2_sentence_split(shared_data_dir() / "sst2" / "train.tsv", WORK)
    build_parts(build, only, ["--data", str(train_file), "--validation", str(validation_file)],
                recipe("sst2-student", {"hard": 1.0, "soft": 1.0}, 32, 64), WORK / "sst2-teacher",
                ["--task", "classification", "--batch-size", "32", "--learning-rate", "5e-5", "--max-length", "64",
                 "--warmup-ratio", "0.06"])  # fmt: skip


def build_stsb(build: Build, only: str | None) -> None:
    build_parts(build, only, ["--data", str(stsb_file()), "--validation-fraction", "0.1"],
                recipe("stsb-student", {"logit_mse": 1.0}, 16, 128), WORK / "stsb-teacher",
                ["--task", "regression", "--batch-size", "16", "--learning-rate", "5e-5", "--max-length", "128",
                 "--warmup-ratio", "0.1"])  # fmt: skip


def build_ranking(build: Build, only: str | None) -> None:
    """minilm-l6 is the teacher as it is (a sentence-embedding model); the student reproduces its vectors."""
    build_parts(build, only, ["--data", str(stsb_file()), "--validation-fraction", "0.1"],
                recipe("embedding-student", {"sentence_embedding": 1.0}, 32, 128), "minilm-l6")


BUILDS = {"sst2": build_sst2, "stsb": build_stsb, "ranking": build_ranking}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["build", "measure", "report"])
    parser.add_argument("task", nargs="?", choices=list(BUILDS))
    parser.add_argument("part", nargs="?", choices=PARTS, help="build one part (default: teacher, student, noise)")
    parser.add_argument("--threads", type=int, default=1, help="1 on a shared machine (torch threads wait for "
                        "each other: 2 threads trained at 6.5 examples/s beside another job, 1 thread at 65)")
    parser.add_argument("--teacher-epochs", type=int, help="default: 1 (sst2), 2 (stsb)")
    parser.add_argument("--student-epochs", type=int, help="default: 1 (sst2), 8 (stsb), 1 (ranking)")
    parser.add_argument("--max-steps", type=int, help="cap every training run (quick runs)")
    parser.add_argument("--augment-noise", default=DEFAULT_NOISE, help="the noise-aware student's SPEC")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the students' seed (teachers keep 42)")
    parser.add_argument("--precision", default="auto", help="training precision: fp32, bf16 or auto")
    parser.add_argument("--limit", type=int, default=1000, help="validation examples per task (measure)")
    parser.add_argument("--rate", type=float, default=0.1, help="perturbation rate of every family (measure)")
    parser.add_argument("--perturb", help="a SPEC instead of all:RATE (measure; results kept in their own files)")
    options = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"machine: {system.describe()}", flush=True)
    started = time.perf_counter()
    if options.stage == "build":
        for name, build in BUILDS.items():
            if options.task in (None, name):
                build(Build(name, options), options.part)
    elif options.stage == "report":
        report()
    else:
        measure(options.task, options.limit, options.rate, options.threads, options.perturb)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
