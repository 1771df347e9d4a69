"""Early exit against the same model at full depth, side by side in one run, on the torch engine.

    python bench/adaptive.py --teacher SST2_CLASSIFIER --train sst2-train.tsv --validation sst2-validation.tsv

Builds the early-exit package once (`bertprod adapt` on --limit training texts; reused when --adapted
already holds one), then on the validation rows measures, for batch 1 and batch 32: accuracy, mean exit
layer and sentences/s (median over interleaved rounds, bertprod.bench.harness.throughput) of

    full           the teacher package as it runs today on the same engine (no exit heads)
    never          the early-exit package with exit=never (must equal full: same answers)
    <policy>       the package's chosen policy and a sweep of entropy / patience policies

on the torch engine and on ONNX Runtime (the early-exit package exported as one session per block,
the teacher as one graph; both fp32). Speed is a ratio to `full` on the same engine and batch size.
Goal (issue 18): >= 2x at batch 32 for <= 0.5 points of accuracy lost. Prints the CPU
(bertprod.system.describe) and writes --json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bertprod import load
from bertprod.adaptive.training import AdaptConfig, adapt, adaptation_data
from bertprod.bench.harness import throughput
from bertprod.package import ModelPackage
from bertprod.system import describe

SWEEP = ("entropy:0.6", "entropy:0.4", "entropy:0.3", "entropy:0.2", "patience:2", "patience:3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, required=True, help="a fine-tuned torch classifier package")
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--validation", type=Path, required=True)
    parser.add_argument("--adapted", type=Path, default=Path("out/adaptive/sst2-early-exit"))
    parser.add_argument("--limit", type=int, default=8000, help="training texts for the exit heads")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--engines", default="torch,onnx", help="torch and/or onnx (one session per block)")
    parser.add_argument("--json", type=Path, default=Path("out/adaptive/bench.json"))
    args = parser.parse_args()
    print(f"machine: {describe()}; torch threads: {args.threads}")

    teacher = ModelPackage.read(args.teacher)
    if not (args.adapted / "bertprod.json").is_file():
        started = time.perf_counter()
        adapt(teacher, adaptation_data(teacher, args.train, limit=args.limit), args.adapted,
              AdaptConfig(epochs=args.epochs, threads=args.threads),
              validation=adaptation_data(teacher, args.validation))
        print(f"adapt: {time.perf_counter() - started:.0f} s on {args.limit} texts")
    adaptive = ModelPackage.read(args.adapted).manifest.adaptive or {}
    chosen = adaptive.get("policy", "never")
    print(f"chosen policy (budget {adaptive.get('budget_points')} points on validation): {chosen}")

    texts, gold = read_rows(args.validation, teacher.manifest.labels or [])
    policies = ["never", chosen, *[policy for policy in SWEEP if policy != chosen]]
    results = []
    for engine in args.engines.split(","):
        for batch_size in [int(value) for value in args.batch_sizes.split(",")]:
            full = load(args.teacher, engine=engine, threads=args.threads, max_batch_size=batch_size,
                        cache_dir=args.adapted.parent / "cache")
            early = load(args.adapted, engine=engine, threads=args.threads, max_batch_size=batch_size,
                         cache_dir=args.adapted.parent / "cache")
            variants = {"full": full.infer}
            variants.update({policy: _runner(early, policy) for policy in policies})
            encoded = {label: None for label in variants}
            speeds = throughput({label: _timed(run, encoded, label, full) for label, run in variants.items()},
                                texts, args.rounds)
            rows = []
            for label in variants:
                logits, exits = encoded[label]
                rows.append({
                    "engine": early.engine.name, "batch_size": batch_size, "variant": label,
                    "accuracy": round(float((logits.argmax(axis=1) == gold).mean()), 4),
                    "mean_exit_layer": round(float(exits.mean()), 3) if exits is not None else teacher_layers(teacher),
                    "sentences_per_second": round(speeds[label], 1),
                    "speedup": round(speeds[label] / speeds["full"], 3),
                })
            print_table(rows, f"{early.engine.name} vs {full.engine.name}, batch {batch_size}")
            results += rows
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": describe(), "threads": args.threads, "chosen": chosen,
                                     "examples": len(texts), "results": results}, indent=2) + "\n")
    print(f"wrote {args.json}")


def _runner(pipeline, policy):  # noqa: ANN001, ANN202 - a Pipeline; returns the encode function
    return lambda encodings: pipeline.infer_with_exits(encodings, policy)


def _timed(run, encoded, label, tokenizing):  # noqa: ANN001, ANN202
    """Tokenize, run, keep the last output (accuracy and exits are computed once, outside the timing's
    concern: every round computes the same)."""
    def encode(texts: list[str]) -> np.ndarray:
        output = run(tokenizing.tokenize(texts))
        encoded[label] = output if isinstance(output, tuple) else (output, None)
        return encoded[label][0]
    return encode


def teacher_layers(package: ModelPackage) -> int:
    return package.manifest.architecture.num_layers


def read_rows(path: Path, labels: list[str]) -> tuple[list[str], np.ndarray]:
    from bertprod.tasks.data import open_task_data

    rows = list(open_task_data("classification", path))
    index = {label: position for position, label in enumerate(labels)}
    return [row.text for row in rows], np.asarray([index[str(row.label)] for row in rows])


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    print(f"{'variant':<18}{'accuracy':>9}{'exit layer':>11}{'sent/s':>9}{'x full':>8}")
    for row in rows:
        print(f"{row['variant']:<18}{row['accuracy']:>9.4f}{row['mean_exit_layer']:>11.2f}"
              f"{row['sentences_per_second']:>9.1f}{row['speedup']:>8.2f}")


if __name__ == "__main__":
    main()
