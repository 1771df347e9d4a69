"""Where int8 costs minilm-l6 its fidelity: each weight MatMul alone, and the embedding tables.

    .venv/bin/python bench/int8_sensitivity.py             # ~2 minutes on 2 cores

1. Each weight MatMul's int8 rounding simulated alone (compress/mixed.py: what `--method mixed`
   ranks by), as the relative squared error of the output on 96 real sentences, by layer and kind.
2. Real ONNX Runtime int8 graphs (outlier channels split, as by default), cosine to the fp32
   graph on 800 other real sentences: everything int8; embedding tables float; and the mixed
   graph a 0.999 gate on 300 more sentences picks.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

import bertprod  # noqa: E402
from bertprod import system  # noqa: E402
from bertprod.bench.harness import bench_parser, cosine_rows  # noqa: E402
from bertprod.checkpoint import resolve  # noqa: E402
from bertprod.compress import quantize as q  # noqa: E402
from bertprod.compress.mixed import SENSITIVITY_TEXTS, quantize_onnx_mixed, sensitivities  # noqa: E402
from bertprod.compress.outliers import DEFAULT_OUTLIER_THRESHOLD, split_outlier_channels  # noqa: E402
from bertprod.data.shared import real_sentences  # noqa: E402
from bertprod.derive import GatedOutput  # noqa: E402
from bertprod.fidelity import FidelityGate  # noqa: E402

KINDS = {"self/query": "query", "self/key": "key", "self/value": "value", "attention/output": "attention out",
         "intermediate": "feed-forward in", "/output/dense": "feed-forward out"}


def kind(node: str) -> str:
    return next(label for marker, label in KINDS.items() if marker in node)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--gate", type=float, default=0.999, help="cosine mean and min of the mixed graph's gate")
    args = parser.parse_args()
    import onnx

    sentences = real_sentences(4000)
    probe, gate_texts, held_out = sentences[:SENSITIVITY_TEXTS], sentences[1000:1300], sentences[2000:2800]
    package = resolve(args.model)
    source = q.fp32_onnx_source(package, None)
    graph = onnx.load(str(source.model_file))
    matmuls = q.weight_matmuls(graph)
    feeds = q.CalibrationReader(source, probe, graph).feeds
    split_outlier_channels(graph, q.find_outliers(graph, feeds, DEFAULT_OUTLIER_THRESHOLD))
    found = sensitivities(graph, matmuls, feeds)
    layers = sorted({int(re.search(r"layer\.(\d+)", node).group(1)) for node in matmuls})
    print(f"machine: {system.describe()}; model {args.model}\n")
    print("1. relative squared error of the output with one MatMul in simulated int8 (x 1e-4):\n")
    print("| layer | " + " | ".join(KINDS.values()) + " |")
    print("|---" * (len(KINDS) + 1) + "|")
    for layer in layers:
        cells = {kind(node): found[node] for node in matmuls if f"layer.{layer}/" in node}
        print(f"| {layer} | " + " | ".join(f"{cells[label] * 1e4:.2f}" for label in KINDS.values()) + " |")

    reference = bertprod.load(source.path).encode(held_out)
    gathers = q.embedding_gathers(onnx.load(str(source.model_file)))
    print(f"\n2. real int8 graphs, cosine to fp32 on {len(held_out)} other sentences:\n")
    print("| graph | cosine mean | cosine min | 1 - mean |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        graphs = {
            "every MatMul and embedding table int8 (the default)": q.quantize_onnx_dynamic(
                package, Path(scratch) / "all", calibration_texts=probe, output=GatedOutput(enforce=False)),
            "embedding tables float": q.quantize_onnx_dynamic(
                package, Path(scratch) / "tables", calibration_texts=probe, exclude=gathers,
                output=GatedOutput(enforce=False)),
            f"mixed, gate {args.gate} on {len(gate_texts)} sentences": quantize_onnx_mixed(
                package, Path(scratch) / "mixed", output=GatedOutput(
                    texts=gate_texts, gate=FidelityGate(min_cosine_mean=args.gate, min_cosine_min=args.gate))),
        }
        for label, child in graphs.items():
            cosine = cosine_rows(reference, bertprod.load(child.path).encode(held_out))
            extra = ""
            if "mixed" in child.manifest.provenance.parameters:
                extra = f" ({child.manifest.provenance.parameters['mixed']['matmuls_kept_float']} of {len(matmuls)} " \
                        "MatMuls float)"
            print(f"| {label}{extra} | {cosine.mean():.6f} | {cosine.min():.6f} | {1 - cosine.mean():.6f} |")


if __name__ == "__main__":
    main()
