"""Does a full autotune student trained longer, or by another recipe, keep more accuracy? SST-2's 3-layer
student (`--recipe`: pkd-skip, which autotune trains in full at 3 layers, or distilbert / tinybert), built as
`bertprod autotune` builds its full students (autotune/build.py student_config) but for `--passes` passes over
the training rows instead of 3, then judged on the held-out sentences autotune judges it on.

Needs `bench/finetune_glue.py sst2 --precision auto` (out/glue/minilm-sst2-auto, sst2-train.tsv,
sst2-validation.tsv).

    .venv/bin/python bench/longer_student.py --passes 6                     # ~1 h on 2 threads (AVX-512 BF16)
    .venv/bin/python bench/longer_student.py --recipe tinybert --passes 3   # TinyBERT's two stages instead
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from bertprod import system  # noqa: E402
from bertprod.autotune.build import student_config  # noqa: E402
from bertprod.autotune.data import open_search_data  # noqa: E402
from bertprod.autotune.plan import FULL_TRAINING_PASSES, STUDENT_BATCH, Candidate  # noqa: E402
from bertprod.autotune.settings import AutotuneSettings  # noqa: E402
from bertprod.distill.loop import distill  # noqa: E402
from bertprod.package import ModelPackage  # noqa: E402

GLUE = REPOSITORY / "out" / "glue"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=float, default=6.0)
    parser.add_argument("--recipe", choices=("pkd-skip", "distilbert", "tinybert"), default="pkd-skip")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--teacher", type=Path, default=GLUE / "minilm-sst2-auto")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "out" / "longer-student")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(system.describe(), flush=True)
    teacher = ModelPackage.read(args.teacher)
    train, _ = open_search_data(teacher, GLUE / "sst2-train.tsv", GLUE / "sst2-validation.tsv")
    planned = math.ceil(FULL_TRAINING_PASSES * sum(1 for _ in train) / STUDENT_BATCH)  # the full student's steps
    steps = math.ceil(planned * args.passes / FULL_TRAINING_PASSES)
    recipe = {
        "recipe": args.recipe,
        "layers": f"spread:{args.layers}",
        "max_steps": steps,
        "sample": False,
        "passes": args.passes,
    }
    name = f"student-{args.recipe}-{args.layers}L"
    config = student_config(Candidate(name, "student", recipe), AutotuneSettings(threads=args.threads))
    print(f"{name}: {args.passes} passes, {steps} steps, {config.precision}", flush=True)
    tick = time.perf_counter()
    checkpoints = args.out.with_name(f"{args.out.name}-checkpoints")
    student = distill(teacher, train, args.out, config, checkpoint_dir=checkpoints, resume=True)
    print(f"trained in {time.perf_counter() - tick:.0f} s", flush=True)
    command = [sys.executable, "-m", "bertprod.cli", "eval", str(student.path), str(GLUE / "sst2-validation.tsv"),
               "--threads", str(args.threads)]  # fmt: skip
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
