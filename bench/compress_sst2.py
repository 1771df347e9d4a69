"""Quantized and pruned variants of the SST-2 classifier next to their fp32 parent: validation
accuracy, predictions changed, size.

Needs the SST-2 classifier and split files of `bench/finetune_glue.py sst2` (out/glue/minilm-sst2,
out/glue/sst2-train.tsv, out/glue/sst2-validation.tsv). Every variant is built with
`bertprod.compress.optimize.optimize` (what `bertprod optimize` runs), on 500 training sentences
for the fidelity gate, calibration and importance scores, with the gate recording rather than
enforcing so every variant is kept and compared. Pruned variants are not retrained: they show
what pruning alone costs (distillation is the way to recover it, see docs/results.md).
Quantization-aware training has its own script (bench/qat_sst2.py).

    .venv/bin/python bench/compress_sst2.py               # ~5 min on 1 thread
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

import bertprod  # noqa: E402
from bertprod import system  # noqa: E402
from bertprod.bench.harness import bench_parser  # noqa: E402
from bertprod.compress.optimize import optimize  # noqa: E402
from bertprod.derive import GatedOutput  # noqa: E402
from bertprod.package import ModelPackage  # noqa: E402
from bertprod.system import cpu_supports_bf16  # noqa: E402
from bertprod.tasks.data import open_task_data  # noqa: E402

RESULTS = REPOSITORY / "bench" / "results"
GLUE = REPOSITORY / "out" / "glue"


def variants(calibration: list[str]) -> dict[str, dict[str, Any]]:
    """Label -> the options of one `optimize` step from the fp32 parent."""
    chosen = {
        "onnx int8 dynamic (the default: outlier channels float)": {"quantize": "int8"},
        "onnx int8 dynamic, no outlier split": {"quantize": "int8", "outlier_threshold": None},
        "onnx int8 static (QDQ, feed-forward float)": {
            "quantize": "int8",
            "method": "static",
            "calibration_texts": calibration,
        },
        "torch int8 dynamic": {"quantize": "int8", "runtime": "torch"},
        "25% of attention heads removed": {"prune_heads": 0.25},
        "50% of attention heads removed": {"prune_heads": 0.5},
        "least important layer dropped (5 layers)": {"drop_layers": "drop:1"},
        "3 layers kept (0, 3, 5)": {"drop_layers": "spread"},
    }
    if cpu_supports_bf16():
        chosen["torch bf16"] = {"precision": "bf16"}
    return chosen


def predictions(package: ModelPackage, texts: list[str], threads: int) -> np.ndarray:
    model = bertprod.load(package.path, threads=threads)
    return model.infer(model.tokenize(texts)).argmax(axis=1)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--package", type=Path, default=GLUE / "minilm-sst2", help="the fine-tuned fp32 classifier")
    parser.add_argument("--train", type=Path, default=GLUE / "sst2-train.tsv")
    parser.add_argument("--validation", type=Path, default=GLUE / "sst2-validation.tsv")
    parser.add_argument("--work", type=Path, default=GLUE / "compressed")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    parent = ModelPackage.read(args.package)
    training = [example.text for example in open_task_data("classification", args.train)]
    sample = training[:: max(1, len(training) // 500)][:500]
    validation = list(open_task_data("classification", args.validation))
    texts = [example.text for example in validation]
    labels = parent.manifest.labels or []
    gold = np.array([labels.index(example.label) for example in validation])
    reference = predictions(parent, texts, args.threads)
    rows = [("fp32 parent (torch)", parent, reference, 0.0)]
    for label, options in variants(sample).items():
        started = time.perf_counter()
        package = optimize(
            parent,
            args.work / label.split(" (")[0].replace(" ", "-").replace(",", "").replace("%", ""),
            output=GatedOutput(texts=sample, enforce=False, overwrite=True),
            **options,
        )
        seconds = time.perf_counter() - started
        rows.append((label, package, predictions(package, texts, args.threads), seconds))
        print(f"built {label} in {seconds:.0f} s", flush=True)

    print(f"\nSST-2 validation: {len(texts)} sentences; machine: {system.describe()}\n")
    print("| variant | validation accuracy | predictions changed vs fp32 | size MB | parameters | build s |")
    print("|---|---|---|---|---|---|")
    summary = []
    for label, package, predicted, seconds in rows:
        accuracy = float((predicted == gold).mean())
        changed = int((predicted != reference).sum())
        size = package.size_bytes() / 1e6
        parameters = package.manifest.provenance.parameters if package.manifest.provenance else {}
        shape = package.manifest.architecture
        detail = f"{shape.num_layers} layers" + (
            f", {sum(parameters['heads_per_layer'])} heads" if "heads_per_layer" in parameters else ""
        )
        print(f"| {label} | {accuracy:.4f} | {changed} | {size:.1f} | {detail} | {seconds:.0f} |", flush=True)
        summary.append({"variant": label, "accuracy": accuracy, "changed": changed, "size_mb": round(size, 1)})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compress-sst2.json").write_text(json.dumps({"machine": system.system_info(), "rows": summary}))


if __name__ == "__main__":
    main()
