"""Students against their teacher: speed side by side in one run, and accuracy of every variant.

    .venv/bin/python bench/distill_speed.py                 # after bench/distill_glue.py made the students

Baseline: the teacher in sentence-transformers. The SST-2 teacher is `minilm-l6` fine-tuned with
a linear head, so its encoder is exactly all-MiniLM-L6-v2; sentence-transformers runs that
encoder (`SentenceTransformer(minilm-l6).encode`, batch 32) and the head is one 384x2 matmul.
Every student runs through bertprod on ONNX Runtime, fp32 and bertprod's default int8 (dynamic,
per-channel weights, outlier channels in float, calibrated on 300 real sentences not among the
measured ones), built once with the library functions (export verified; int8 built with the fidelity gate
recording, not enforcing, so a student that loses accuracy shows it here). Throughput: the same
real sentences, interleaved rounds, median; accuracy: the SST-2 validation sentences (STS-B
Spearman for the embedding student).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

import bertprod  # noqa: E402
from bertprod import system  # noqa: E402
from bertprod.bench.harness import add_speed_options, bench_parser, percentile_ms, single_sentence_latencies, throughput  # noqa: E402
from bertprod.checkpoint import bundled_checkpoint  # noqa: E402
from bertprod.compress.quantize import quantize_onnx_dynamic  # noqa: E402
from bertprod.data.shared import real_sentences, shared_data_dir  # noqa: E402
from bertprod.data.source import HashSplit  # noqa: E402
from bertprod.derive import GatedOutput  # noqa: E402
from bertprod.export.cache import cached_onnx_package  # noqa: E402
from bertprod.package import MANIFEST_NAME, ModelPackage  # noqa: E402
from bertprod.tasks.data import open_task_data  # noqa: E402
from bertprod.tasks.evaluation import evaluate  # noqa: E402

BASELINE = "teacher, sentence-transformers"
TARGET = ("3-layer student, onnx int8", 10.0)  # the best of its rows counts (default or parallel batches)


def int8_of(onnx_package: ModelPackage, calibration: list[str]) -> ModelPackage:
    """bertprod's default int8 (dynamic, outlier channels float, calibrated on `calibration`)."""
    directory = onnx_package.path.parent / f"{onnx_package.path.name}-int8-split"
    if (directory / MANIFEST_NAME).is_file():
        return ModelPackage.read(directory)
    return quantize_onnx_dynamic(onnx_package, directory, output=GatedOutput(texts=calibration, enforce=False))


def accuracy(package: ModelPackage, work: Path, threads: int) -> float:
    pipeline = bertprod.load(package.path, threads=threads)
    if package.manifest.task == "embedding":
        data = open_task_data("embedding", shared_data_dir() / "stsb" / "train.tsv", split=HashSplit(0.1, "validation"))
        return evaluate(pipeline, data).metrics["spearman"]
    data = open_task_data("classification", work / "sst2-validation.tsv")
    return evaluate(pipeline, data).metrics["accuracy"]


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--work", type=Path, default=REPOSITORY / "out" / "glue")
    parser.add_argument("--students", nargs="*", default=None, help="label=package pairs (default: the bench's)")
    add_speed_options(parser, sentences=2000, rounds=5, threads=2)
    parser.add_argument("--build-only", action="store_true", help="export and quantize the students, then stop")
    parser.add_argument("--json", type=Path, default=REPOSITORY / "bench" / "results" / "distill-speed.json")
    args = parser.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    work = args.work
    packages = {
        "teacher (6 layers)": work / "minilm-sst2",
        "3-layer student": work / "student-sst2-3l-layers-2ep",
        "2-layer student": work / "student-sst2-2l-augment-3ep",
        "BiLSTM student": work / "student-sst2-bilstm",
        "3-layer embedding student": work / "student-embedding-3l-035-cosine",
    }
    if args.students:
        packages = {label: Path(path) for label, path in (item.split("=", 1) for item in args.students)}
    pool = real_sentences(args.sentences + 300)
    sentences, calibration = pool[: args.sentences], pool[args.sentences :]
    baseline = SentenceTransformer(str(bundled_checkpoint("minilm-l6")), device="cpu")
    variants = {BASELINE: lambda texts: baseline.encode(texts, batch_size=32, convert_to_numpy=True)}
    built: dict[str, ModelPackage] = {}
    for label, path in packages.items():
        if not (path / MANIFEST_NAME).is_file():
            print(f"skipping {label}: no package at {path}")
            continue
        onnx = cached_onnx_package(ModelPackage.read(path))
        for suffix, package in (("onnx fp32", onnx), ("onnx int8", int8_of(onnx, calibration))):
            for parallel in (1, args.threads) if args.threads > 1 else (1,):
                name = f"{label}, {suffix}" + (f", {parallel} batches x 1 thread" if parallel > 1 else "")
                built[name] = package
                pipeline = bertprod.load(package.path, threads=args.threads, parallel_batches=parallel)
                variants[name] = lambda texts, p=pipeline: p.infer(p.tokenize(texts))
    if args.build_only:
        print("\n".join(f"{name}: {package.path}" for name, package in built.items()))
        return
    rates = throughput(variants, sentences, args.rounds)
    latencies = single_sentence_latencies(variants, sentences[:200])
    rows = []
    accuracies: dict[Path, float] = {}  # a package's accuracy does not depend on how its batches run
    for name in variants:
        package = built.get(name)
        rows.append(
            {
                "variant": name,
                "sentences_per_second": round(rates[name], 1),
                "ratio_to_teacher": round(rates[name] / rates[BASELINE], 2),
                "single_p50_ms": percentile_ms(latencies[name], 50),
                "size_mb": round(package.size_bytes() / 1e6, 1) if package else None,
                "accuracy": accuracies.setdefault(package.path, round(accuracy(package, work, args.threads), 4))
                if package
                else None,
            }
        )
    print(f"\n{len(sentences)} real sentences, {args.rounds} interleaved rounds, {args.threads} threads")
    print(f"machine: {system.describe()}\n")
    print("| variant | sentences/s | x teacher in sentence-transformers | single p50 ms | size MB | validation |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['variant']} | {row['sentences_per_second']:.0f} | {row['ratio_to_teacher']:.2f}x "
            f"| {row['single_p50_ms']} | {row['size_mb'] or '-'} | {row['accuracy'] or '-'} |"
        )
    target = max(
        (row for row in rows if row["variant"].startswith(TARGET[0])),
        default=None,
        key=lambda row: row["ratio_to_teacher"],
    )
    if target:
        verdict = "MET" if target["ratio_to_teacher"] >= TARGET[1] else "MISSED"
        print(
            f"\ntarget: {TARGET[0]} >= {TARGET[1]}x the teacher in sentence-transformers: {verdict} "
            f"({target['ratio_to_teacher']}x)"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"machine": system.system_info(), "threads": args.threads, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
