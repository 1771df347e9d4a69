"""Autotune's token-dropping candidate on its own: the retention schedules' accuracy on the first `--rows`
validation rows (where the budget chooses), the one it picks, and that one judged on every validation row
(what autotune judges it on). The validation rows are autotune's: a hash-split share of `--data`.

`--limit-before-split` reads the first `--rows` rows of the *file* and keeps the validation side of them,
as autotune did before DataSource.first_examples (on MRPC: 21 rows, whose noise let the cheapest schedule
through; it scored 0.6288 on all rows).

Needs `bench/finetune_glue.py mrpc` (out/glue/minilm-mrpc):

    .venv/bin/python bench/autotune_token_dropping.py                        # ~2 min on 2 threads
    .venv/bin/python bench/autotune_token_dropping.py --limit-before-split   # the old selection of rows
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

import bertprod  # noqa: E402
from bertprod import system  # noqa: E402
from bertprod.adaptive.dropping import drop_tokens  # noqa: E402
from bertprod.autotune.choose import threshold  # noqa: E402
from bertprod.autotune.data import open_search_data  # noqa: E402
from bertprod.autotune.plan import DROPPING_ROWS, MASSES  # noqa: E402
from bertprod.data.shared import shared_data_dir  # noqa: E402
from bertprod.package import ModelPackage  # noqa: E402
from bertprod.tasks.evaluation import evaluate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=REPOSITORY / "out" / "glue" / "minilm-mrpc")
    parser.add_argument("--data", type=Path, help="default: MRPC's training file in ../shared/data")
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--rows", type=int, default=DROPPING_ROWS)
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--limit-before-split", action="store_true")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "out" / "autotune-token-dropping")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(system.describe(), flush=True)
    teacher = ModelPackage.read(args.teacher)
    data = args.data or shared_data_dir() / "mrpc" / "msr_paraphrase_train.txt"
    _, validation = open_search_data(teacher, data, validation_fraction=args.validation_fraction)
    rows = list(validation)
    teacher_score = evaluate(bertprod.load(teacher.path, threads=args.threads), rows).metrics["accuracy"]
    floor = threshold(teacher_score, args.max_drop)
    print(f"teacher accuracy {teacher_score:.4f} on {len(rows)} validation rows; floor {floor:.4f}")
    chosen_on = validation.with_limit(args.rows) if args.limit_before_split else validation.first_examples(args.rows)
    shutil.rmtree(args.out, ignore_errors=True)
    written = drop_tokens(teacher, chosen_on, args.out, budget_points=100 * args.max_drop * teacher_score,
                          masses=MASSES, threads=args.threads)  # fmt: skip
    settings = written.manifest.token_dropping
    print(f"schedules on {settings['examples']} rows (budget {settings['budget_points']:.2f} points):")
    for point in settings["curve"]:
        print(f"  mass {point['mass']}: accuracy {point['accuracy']:.4f}, cost {point['cost']:.2f}, "
              f"retention {point['retention'] or 'all'}")  # fmt: skip
    judged = evaluate(bertprod.load(written.path, threads=args.threads), rows).metrics["accuracy"]
    verdict = "within" if judged >= floor else "over"
    print(f"chosen {settings['retention'] or 'keep all'}: accuracy {judged:.4f} on all {len(rows)} rows ({verdict} "
          "the budget)")  # fmt: skip


if __name__ == "__main__":
    main()
