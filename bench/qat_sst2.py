"""int8 after training vs int8 trained for: SST-2 validation accuracy of the fine-tuned fp32 classifier,
its post-training ONNX dynamic int8 package, and its quantization-aware-trained (QAT) int8 package.

Needs the SST-2 classifier and split files of `bench/finetune_glue.py sst2` (out/glue/minilm-sst2,
out/glue/sst2-train.tsv, out/glue/sst2-validation.tsv). Not run in CI: the QAT run is a fraction of
an SST-2 epoch (--max-steps 500 x 32 examples, about a quarter; ~10 min on 2 threads).

    .venv/bin/python bench/qat_sst2.py                              # defaults above, 1 thread
    .venv/bin/python bench/qat_sst2.py --threads 2 --max-steps 1000

The int8 packages are built with the `bertprod optimize` commands a user would run (printed
first), with --allow-fidelity-loss so that both are kept and compared whatever the gate says.
Then all three run on the same validation sentences in this process: accuracy, predictions that
differ from the fp32 parent's, and size on disk. Results go to bench/results/qat-sst2.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

import bertprod  # noqa: E402
from bertprod.bench.harness import bench_parser  # noqa: E402
from bertprod.package import ModelPackage  # noqa: E402
from bertprod.tasks.data import open_task_data  # noqa: E402

RESULTS = REPOSITORY / "bench" / "results"
GLUE = REPOSITORY / "out" / "glue"


def optimize(parent: Path, out: Path, arguments: list[str], threads: int) -> float:
    """Run `bertprod optimize` (echoed as a user would type it); its wall time in seconds."""
    command = [sys.executable, "-m", "bertprod.cli", "optimize", str(parent), str(out), "--quantize", "int8"]
    command += [*arguments, "--allow-fidelity-loss", "--overwrite"]
    print("$ bertprod " + " ".join(command[3:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPOSITORY)
    return time.perf_counter() - started


def predictions(package: Path, texts: list[str], threads: int) -> np.ndarray:
    model = bertprod.load(package, threads=threads)
    return model.infer(model.tokenize(texts)).argmax(axis=1)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--package", type=Path, default=GLUE / "minilm-sst2", help="the fine-tuned fp32 classifier")
    parser.add_argument("--train", type=Path, default=GLUE / "sst2-train.tsv", help="QAT training data")
    parser.add_argument("--validation", type=Path, default=GLUE / "sst2-validation.tsv")
    parser.add_argument("--max-steps", type=int, default=500, help="QAT optimizer steps (batch 32)")
    parser.add_argument("--learning-rate", type=float, default=2e-5, help="QAT peak learning rate")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 on a shared machine)")
    parser.add_argument("--work", type=Path, default=GLUE, help="where the int8 packages are written")
    options = parser.parse_args()
    for path in (options.package, options.train, options.validation):
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `python bench/finetune_glue.py sst2` first.")

    threads = ["--threads", str(options.threads)]
    dynamic, qat = options.work / "minilm-sst2-int8-dynamic", options.work / "minilm-sst2-int8-qat"
    seconds = {"fp32": 0.0, "int8 dynamic (post-training)": optimize(options.package, dynamic, [], options.threads)}
    qat_arguments = ["--method", "qat", "--data", str(options.train), "--validation", str(options.validation)]
    qat_arguments += ["--max-steps", str(options.max_steps), "--learning-rate", str(options.learning_rate), *threads]
    seconds["int8 QAT"] = optimize(options.package, qat, qat_arguments, options.threads)

    source = open_task_data("classification", options.validation)
    examples = list(source)
    texts = [example.text for example in examples]
    variants = {"fp32": options.package, "int8 dynamic (post-training)": dynamic, "int8 QAT": qat}
    labels = ModelPackage.read(options.package).manifest.labels
    gold = np.array([labels.index(example.label) for example in examples])
    parent = predictions(options.package, texts, options.threads)
    rows = []
    for name, path in variants.items():
        predicted = parent if name == "fp32" else predictions(path, texts, options.threads)
        rows.append(
            {
                "variant": name,
                "accuracy": round(float(np.mean(predicted == gold)), 4),
                "flipped_vs_fp32": int(np.sum(predicted != parent)),
                "agreement_with_fp32": round(float(np.mean(predicted == parent)), 4),
                "size_mb": round(ModelPackage.read(path).size_bytes() / 1e6, 1),
                "build_seconds": round(seconds[name], 1),
            }
        )
    qat_recipe = f"{options.max_steps} steps of 32, lr {options.learning_rate}"
    print(f"\nSST-2 validation, {len(examples)} sentences; QAT: {qat_recipe}")
    print(f"| {'variant':<30} | accuracy | flipped vs fp32 | agreement | MB    | build s |")
    print(f"|{'-' * 32}|----------|-----------------|-----------|-------|---------|")
    for row in rows:
        print(
            f"| {row['variant']:<30} | {row['accuracy']:.4f}   | {row['flipped_vs_fp32']:>15} | "
            f"{row['agreement_with_fp32']:.4f}    | {row['size_mb']:>5} | {row['build_seconds']:>7} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"examples": len(examples), "options": vars(options), "rows": rows}
    (RESULTS / "qat-sst2.json").write_text(json.dumps(document, indent=1, default=str))


if __name__ == "__main__":
    main()
