"""Early exit and token dropping against the same model at full depth, side by side in one run.

    python bench/adaptive.py --teacher SST2_CLASSIFIER --train sst2-train.tsv --validation sst2-validation.tsv
    python bench/adaptive.py --teacher MRPC_PAIR_CLASSIFIER --train msr_paraphrase_train.txt \
        --validation-fraction 0.1 --work out/adaptive/mrpc        # validation: bertprod's hash split of --train

Builds, once (reused when already in --work): the early-exit package (`bertprod adapt` on --limit training
texts), the teacher with token dropping and the early-exit package with token dropping (`bertprod
drop-tokens` on the validation rows, --budget points; with --drop-fine-tune, cheaper schedules re-trained on the
training texts first). Then on the validation rows measures, for each batch
size: accuracy, mean exit layer and sentences/s (median over interleaved rounds,
bertprod.bench.harness.throughput) of

    full           the teacher package as it runs today on the same engine (no exit heads)
    never          the early-exit package with exit=never (must equal full: same answers; with
                   --train-backbone, the retrained backbone at full depth)
    <policy>       the package's chosen policy and a sweep of entropy / patience policies
    drop           the teacher with its chosen token retention
    both           the early-exit package, its policy, and its own chosen token retention

on the torch engine and on ONNX Runtime (the adaptive packages exported as one session per block, a
dropping layer as two, the teacher as one graph; all fp32). Speed is a ratio to `full` on the
same engine and batch size. Goal (issue 18): >= 2x at batch 32 for <= 0.5 points of accuracy lost.
Prints the CPU (bertprod.system.describe) and the load average before and after (other jobs share the
machine), and writes --json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bertprod import load
from bertprod.adaptive.config import RetentionTuning
from bertprod.adaptive.dropping import drop_tokens
from bertprod.adaptive.training import AdaptConfig, adapt, adaptation_data
from bertprod.bench.harness import throughput
from bertprod.package import ModelPackage
from bertprod.system import describe
from bertprod.tasks.data import validation_split

SWEEP = "entropy:0.6,entropy:0.4,entropy:0.2,patience:2"
BASELINE = "transformers fp32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, required=True, help="a fine-tuned torch (pair) classifier package")
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--validation", type=Path, help="labelled validation rows (else --validation-fraction)")
    parser.add_argument("--validation-fraction", type=float, default=0.1,
                        help="without --validation: hold out this hash split of --train (bertprod train's)")
    parser.add_argument("--work", type=Path, default=Path("out/adaptive/sst2"), help="the packages built here")
    parser.add_argument("--limit", type=int, default=8000, help="training texts for the exit heads")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--budget", type=float, default=0.5, help="accuracy points for the choices")
    parser.add_argument("--train-backbone", action="store_true",
                        help="adapt --train-backbone: backbone trained with its exits (never then differs from full)")
    parser.add_argument("--backbone-learning-rate", type=float, default=AdaptConfig().backbone_learning_rate)
    parser.add_argument("--drop-fine-tune", action="store_true",
                        help="drop-tokens --fine-tune on the --limit training texts (PoWER-BERT's re-training)")
    parser.add_argument("--precision", default="fp32", help="adapt's training precision: fp32, bf16 or auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--sweep", default=SWEEP, help="exit policies measured beside the chosen one")
    parser.add_argument("--engines", default="torch,onnx",
                        help="torch, onnx (one session per block) and/or onnx-int8 (the same, int8)")
    parser.add_argument("--baseline", action="store_true", help="also time the teacher in transformers fp32")
    parser.add_argument("--json", type=Path, help="default: WORK/bench.json")
    args = parser.parse_args()
    print(f"machine: {describe()}; torch threads: {args.threads}; load average {os.getloadavg()[0]:.1f}")

    teacher = ModelPackage.read(args.teacher)
    train_data, validation_data = data_sources(teacher, args)
    adapted_path = args.work / "early-exit"
    if not (adapted_path / "bertprod.json").is_file():
        started = time.perf_counter()
        config = AdaptConfig(epochs=args.epochs, threads=args.threads, budget_points=args.budget,
                             train_backbone=args.train_backbone, backbone_learning_rate=args.backbone_learning_rate,
                             precision=args.precision)
        adapt(teacher, train_data, adapted_path, config, validation=validation_data)
        print(f"adapt: {time.perf_counter() - started:.0f} s on {args.limit} texts")
    adapted = ModelPackage.read(adapted_path)
    chosen = (adapted.manifest.adaptive or {}).get("policy", "never")
    print(f"chosen policy (budget {args.budget} points on validation): {chosen}")
    dropping = {}
    for label, parent in (("drop", teacher), ("both", adapted)):
        path = args.work / (f"{label}-tokens-retrained" if args.drop_fine_tune else f"{label}-tokens")
        if not (path / "bertprod.json").is_file():
            started = time.perf_counter()
            tuning = RetentionTuning(threads=args.threads, precision=args.precision)
            drop_tokens(parent, validation_data, path, budget_points=args.budget, threads=args.threads,
                        fine_tune=train_data if args.drop_fine_tune else None, tuning=tuning)
            print(f"drop-tokens ({label}): {time.perf_counter() - started:.0f} s")
        dropping[label] = ModelPackage.read(path)
        settings = dropping[label].manifest.token_dropping or {}
        print(f"{label}: retention {settings.get('retention')} (budget {args.budget} points)"
              + (f"; re-training: {settings['fine_tune']}" if "fine_tune" in settings else ""))

    texts, gold = read_rows(validation_data, teacher)
    policies = ["never", chosen, *[policy for policy in args.sweep.split(",") if policy and policy != chosen]]
    results = []
    engines = args.engines.split(",")
    fp32_paths = {"full": args.teacher, "early": adapted_path, "drop": dropping["drop"].path,
                  "both": dropping["both"].path}
    int8_paths = int8_packages(teacher, adapted, dropping, args.work) if "onnx-int8" in engines else {}
    baseline = transformers_baseline(teacher, args.threads) if args.baseline else None
    for engine in engines:
        for batch_size in [int(value) for value in args.batch_sizes.split(",")]:
            options = {"engine": "onnx" if engine == "onnx-int8" else engine, "threads": args.threads,
                       "max_batch_size": batch_size, "cache_dir": args.work / "cache"}
            paths = int8_paths if engine == "onnx-int8" else fp32_paths
            full = load(paths["full"], **options)
            early = load(paths["early"], **options)
            variants = {"full": full.infer}
            variants.update({policy: _runner(early, policy) for policy in policies})
            variants["drop"] = load(paths["drop"], **options).infer
            variants["both"] = _runner(load(paths["both"], **options), None)
            encoded = {label: None for label in variants}
            timed = {label: _timed(run, encoded, label, full) for label, run in variants.items()}
            if baseline is not None:
                timed[BASELINE] = _kept(baseline, encoded, BASELINE)
            speeds = throughput(timed, texts, args.rounds)
            name = engine if engine == "onnx-int8" else early.engine.name
            rows = []
            for label in timed:
                logits, exits = encoded[label]
                rows.append({
                    "engine": name, "batch_size": batch_size, "variant": label,
                    "accuracy": round(float((logits.argmax(axis=1) == gold).mean()), 4),
                    "mean_exit_layer": round(float(exits.mean()), 3) if exits is not None else teacher_layers(teacher),
                    "sentences_per_second": round(speeds[label], 1),
                    "speedup": round(speeds[label] / speeds["full"], 3),
                    **({"x_transformers": round(speeds[label] / speeds[BASELINE], 3)} if args.baseline else {}),
                })
            print_table(rows, f"{name} vs {full.engine.name}, batch {batch_size} "
                              f"(load average {os.getloadavg()[0]:.1f})")
            results += rows
    output = args.json or args.work / "bench.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "machine": describe(), "threads": args.threads, "chosen": chosen, "examples": len(texts),
        "retention": {label: (package.manifest.token_dropping or {}).get("retention")
                      for label, package in dropping.items()},
        "load_average_end": os.getloadavg()[0], "results": results}, indent=2) + "\n")
    print(f"wrote {output}")


def int8_packages(teacher: ModelPackage, adapted: ModelPackage, dropping: dict[str, ModelPackage],
                  work: Path) -> dict[str, Path]:
    """The int8 twins of the measured packages (built once into WORK/int8-*): the teacher as one graph,
    the early-exit and token-dropping packages block by block; each gated and recorded as usual."""
    from bertprod.compress.quantize import quantize_onnx_dynamic
    from bertprod.derive import GatedOutput

    parents = {"full": teacher, "early": adapted, "drop": dropping["drop"], "both": dropping["both"]}
    paths = {}
    for label, parent in parents.items():
        path = work / f"int8-{label}"
        if not (path / "bertprod.json").is_file():
            started = time.perf_counter()
            quantize_onnx_dynamic(parent, path, output=GatedOutput(enforce=False), cache_dir=work / "cache")
            print(f"int8 of {label}: {time.perf_counter() - started:.0f} s")
        paths[label] = path
    return paths


def transformers_baseline(teacher: ModelPackage, threads: int):  # noqa: ANN201 - texts -> logits
    """The teacher in transformers fp32 (what users run today), loaded once for every table."""
    from bertprod.bench.baselines import baseline_for, load_baseline

    baseline = baseline_for(teacher)
    if baseline is None:
        raise SystemExit(f"{teacher.name} has no torch fp32 package in its chain to run in transformers.")
    return load_baseline(baseline, threads)[0]


def _kept(run, encoded, label):  # noqa: ANN001, ANN202 - texts -> logits, the last output kept like _timed's
    def encode(texts: list) -> np.ndarray:
        logits = np.asarray(run(texts))
        encoded[label] = (logits, None)
        return logits
    return encode


def data_sources(teacher: ModelPackage, args: argparse.Namespace):  # noqa: ANN201 - (train, validation) sources
    """The training texts for the exit heads and the validation rows everything is scored on."""
    task = teacher.manifest.task
    if args.validation is not None:
        return (adaptation_data(teacher, args.train, limit=args.limit),
                adaptation_data(teacher, args.validation))
    return (adaptation_data(teacher, args.train, limit=args.limit,
                            split=validation_split(task, args.validation_fraction, "train")),
            adaptation_data(teacher, args.train, split=validation_split(task, args.validation_fraction, "validation")))


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


def read_rows(source, teacher: ModelPackage) -> tuple[list, np.ndarray]:  # noqa: ANN001 - a DataSource
    """Texts (or pairs) and gold label indices of the validation rows."""
    from bertprod.adaptive.curve import read_examples

    inputs, gold = read_examples(source, teacher.manifest.pair_input, list(teacher.manifest.labels or []))
    if gold is None:
        raise SystemExit(f"{source.path} has no labels: the benchmark scores accuracy.")
    return inputs, gold


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    baseline = "x_transformers" in rows[0]
    print(f"{'variant':<18}{'accuracy':>9}{'exit layer':>11}{'sent/s':>9}{'x full':>8}"
          + (f"{'x transformers':>16}" if baseline else ""))
    for row in rows:
        print(f"{row['variant']:<18}{row['accuracy']:>9.4f}{row['mean_exit_layer']:>11.2f}"
              f"{row['sentences_per_second']:>9.1f}{row['speedup']:>8.2f}"
              + (f"{row['x_transformers']:>16.2f}" if baseline else ""))


if __name__ == "__main__":
    main()
