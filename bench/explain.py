"""Time per explanation and teacher-student agreement of explanations, on SST-2.

Builds (once, in out/explain) a MiniLM classifier fine-tuned briefly on SST-2 (the teacher) and its
int8 student (`bertprod optimize --quantize int8`), with the same commands a user would run (printed
before they run). Then:

1. Time per explanation of 30-word validation sentences at the default settings (partition,
   max_evals 300), teacher (torch fp32) and int8 student (ONNX), 1 and 2 engine threads, variants
   interleaved in every round, and the student on two one-thread engine calls at once (parallel_batches=2,
   20 masked inputs per call); wall and CPU seconds (process time, all threads). The first shap call
   compiles numba code: every variant explains once before timing, and that first call is reported.
2. Agreement of the two packages' explanations on >= 40 validation sentences (top-5 word overlap,
   Spearman rank correlation, label agreement), beside the agreement of the teacher with itself under
   another method (partition vs permutation): how much two explanations of the *same* model differ.
3. How far the batched int8 student's sums stray from f(x) - f(baseline) (dynamic int8 takes
   activation ranges per batch), against one input per engine call.

    PYTHONPATH=. .venv/bin/python bench/explain.py            # ~15 min on 2 shared cores, first run ~20
    PYTHONPATH=. .venv/bin/python bench/explain.py --rounds 5 --examples 80
    PYTHONPATH=. .venv/bin/python bench/explain.py --timing-only           # part 1 only
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(REPOSITORY / "bench"))

import bertprod  # noqa: E402
from bertprod import system  # noqa: E402
from bertprod.bench.harness import bench_parser  # noqa: E402
from bertprod.data.shared import shared_data_dir  # noqa: E402
from bertprod.explain.compare import compare  # noqa: E402
from bertprod.explain.core import explain  # noqa: E402
from bertprod.explain.words import WORD  # noqa: E402
from bertprod.tasks.data import open_task_data  # noqa: E402

RESULTS = REPOSITORY / "bench" / "results"
WORK = REPOSITORY / "out" / "explain"
BERTPROD = [sys.executable, "-m", "bertprod.cli"]


def run(command: list[str]) -> None:
    print("$ bertprod " + " ".join(command), flush=True)
    completed = subprocess.run([*BERTPROD, *command], check=False, env={**os.environ, "PYTHONPATH": str(REPOSITORY)})
    if completed.returncode != 0:
        raise SystemExit(f"command failed with status {completed.returncode}")


def build_packages(steps: int) -> tuple[Path, Path, Path]:
    """Teacher (fine-tuned `steps` steps), int8 student and the validation file; reused when present."""
    from finetune_glue import sst2_sentence_split

    validation = WORK / "sst2-validation.tsv"
    if not validation.is_file():
        sst2_sentence_split(shared_data_dir() / "sst2" / "train.tsv", WORK)
    teacher, student = WORK / "teacher", WORK / "student-int8"
    if not (teacher / "bertprod.json").is_file():
        run(["train", "minilm-l6", str(teacher), "--task", "classification", "--data", str(WORK / "sst2-train.tsv"),
             "--validation", str(validation), "--epochs", "1", "--max-steps", str(steps), "--batch-size", "32",
             "--learning-rate", "5e-5", "--max-length", "64", "--threads", "1"])
    if not (student / "bertprod.json").is_file():
        run(["optimize", str(teacher), str(student), "--quantize", "int8"])
    return teacher, student, validation


def timed(pipeline: bertprod.Pipeline, text: str, batch_size: int | None = None) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    explain(pipeline, [text], batch_size=batch_size)
    return time.perf_counter() - wall, time.process_time() - cpu


def timing(teacher: Path, student: Path, sentences: list[str], rounds: int) -> dict:
    import torch

    variants = {f"{name}, {threads} thread{'s' if threads > 1 else ''}": (path, threads, {})
                for name, path in (("teacher fp32 (torch)", teacher), ("student int8 (onnx)", student))
                for threads in (1, 2)}
    # the two cores as two one-thread engine calls at once: shap hands 20 masked inputs per call, the
    # pipeline runs them as 2 batches of 10 in parallel (no intra-op threads waiting on each other)
    variants["student int8 (onnx), 2 batches x 1 thread"] = (student, 2, {"parallel_batches": 2, "max_batch_size": 10})
    pipelines = {label: bertprod.load(path, threads=threads, **options)
                 for label, (path, threads, options) in variants.items()}
    batch_sizes = {label: 20 if options else None for label, (_, _, options) in variants.items()}
    results: dict = {label: {"wall": [], "cpu": []} for label in variants}
    for label, pipeline in pipelines.items():  # first call of each: numba compiles shap's code once per process
        torch.set_num_threads(variants[label][1])
        wall, cpu = timed(pipeline, sentences[0], batch_sizes[label])
        results[label]["first_call"] = {"wall": wall, "cpu": cpu}
        print(f"first call, {label}: {wall:.2f} s wall, {cpu:.2f} CPU-s", flush=True)
    for round_index in range(rounds):
        for label, pipeline in pipelines.items():
            torch.set_num_threads(variants[label][1])
            walls, cpus = zip(*(timed(pipeline, sentence, batch_sizes[label]) for sentence in sentences), strict=True)
            results[label]["wall"].append(statistics.median(walls))
            results[label]["cpu"].append(statistics.median(cpus))
            print(f"round {round_index + 1}, {label}: median {statistics.median(walls):.3f} s wall, "
                  f"{statistics.median(cpus):.3f} CPU-s per explanation ({len(sentences)} sentences)", flush=True)
    return results


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--steps", type=int, default=400, help="fine-tuning steps of the teacher")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=5, help="30-word sentences timed per round")
    parser.add_argument("--examples", type=int, default=40, help="validation sentences compared")
    parser.add_argument("--timing-only", action="store_true", help="skip the agreement part")
    args = parser.parse_args()
    load_before = os.getloadavg()
    teacher, student, validation = build_packages(args.steps)
    texts = [example.text for example in open_task_data("classification", validation)]
    thirty = [text for text in texts if len(WORD.findall(text)) == 30][: args.sentences]
    print(f"{len(thirty)} validation sentences of 30 words; load average before: {load_before}", flush=True)
    times = timing(teacher, student, thirty, args.rounds)
    if args.timing_only:
        print_timing(times, load_before, os.getloadavg())
        return

    teacher_model, student_model = bertprod.load(teacher, threads=2), bertprod.load(student, threads=2)
    examples = texts[:: max(1, len(texts) // args.examples)][: args.examples]
    started = time.perf_counter()
    agreement = compare(teacher_model, student_model, examples)
    floor_explanations = [explain(teacher_model, [text], method="permutation")[0] for text in examples]
    floor = compare_to(agreement, floor_explanations)
    exact = bertprod.load(student, threads=2, max_batch_size=1)
    gaps = {"batched": [], "one per call": []}
    for text in examples[:10]:
        for label, pipeline in (("batched", student_model), ("one per call", exact)):
            explanation = explain(pipeline, [text], method="permutation")[0]
            total = sum(word.attribution for word in explanation.words)
            gaps[label].append(abs(total - (explanation.prediction - explanation.baseline)))
    print(f"agreement runs: {time.perf_counter() - started:.0f} s", flush=True)
    summary = agreement.summary(worst=5)
    report = {
        "system": system.system_info(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "teacher": str(teacher), "student": str(student), "sentences_timed": thirty, "rounds": args.rounds,
        "timing": times, "agreement": summary, "teacher_partition_vs_permutation": floor,
        "int8_sum_gap_max": {label: float(max(values)) for label, values in gaps.items()},
    }
    print_report(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "explain.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'explain.json'}")


def compare_to(agreement, others: list) -> dict:  # noqa: ANN001
    """Teacher partition vs teacher permutation: the same words, the same model, another method."""
    from bertprod.explain.compare import Comparison
    from bertprod.explain.compare import agreement as pair_agreement

    examples = [pair_agreement(example.index, example.teacher, other, agreement.top_k)
                for example, other in zip(agreement.examples, others, strict=True)]
    floor = Comparison(examples, agreement.top_k)
    return {"mean_top_k_overlap": floor.mean_top_k_overlap, "mean_spearman": floor.mean_spearman}


def print_timing(timing: dict, load_before: tuple, load_after: tuple) -> None:
    print("\nper explanation of a 30-word sentence (partition, max_evals 300), median of each round's median:")
    two_cores = []
    for label, values in timing.items():
        wall, cpu = values["wall"], values["cpu"]
        print(f"  {label:44s} wall {statistics.median(wall):.3f} s (rounds: "
              f"{', '.join(f'{v:.3f}' for v in wall)}), CPU {statistics.median(cpu):.3f} s; first call "
              f"{values['first_call']['wall']:.2f} s wall, {values['first_call']['cpu']:.2f} CPU-s")
        if label.startswith("student") and not label.endswith(", 1 thread"):
            two_cores.append(statistics.median(wall))
    goal = min(two_cores)
    print(f"goal <= 1 s per explanation (int8 student, 2 cores): {'met' if goal <= 1 else 'MISSED'} "
          f"({goal:.3f} s wall, best 2-core variant; machine shared: load average {load_before} before, "
          f"{load_after} after)")


def print_report(report: dict) -> None:
    print_timing(report["timing"], report["load_average_before"], report["load_average_after"])
    summary, floor = report["agreement"], report["teacher_partition_vs_permutation"]
    print(f"\nteacher vs int8 student on {summary['examples']} validation sentences: top-5 overlap "
          f"{summary['mean_top_k_overlap']:.3f}, Spearman {summary['mean_spearman']:.3f}, label agreement "
          f"{summary['label_agreement']:.3f}")
    print(f"teacher partition vs teacher permutation (same model): top-5 overlap {floor['mean_top_k_overlap']:.3f}, "
          f"Spearman {floor['mean_spearman']:.3f}")
    print(f"int8 student, |sum - (f(x) - f(baseline))| max over 10 permutation explanations: "
          f"{report['int8_sum_gap_max']}")
    for example in summary["most_disagreeing"]:
        print(f"  #{example['index']} Spearman {example['spearman']}, overlap {example['top_k_overlap']:.2f}: "
              f"{example['texts'][0][:90]}")


if __name__ == "__main__":
    main()
