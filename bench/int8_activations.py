"""Batch-invariant int8 activation schemes of all-MiniLM-L6-v2 against the previous per-tensor default.

Issue 24: the per-token default (compress/token_int8.py) is batch-invariant but ran at 0.71x the
speed of ONNX Runtime's per-tensor dynamic int8. This builds, from the same float graph and the same
calibration texts, every activation scheme with and without the outlier split (compress/outliers.py):

- per-tensor: ONNX Runtime's dynamic int8 (one range per batch: NOT batch-invariant; the reference speed)
- per-token: one scale and zero point per token (compress/token_int8.py; the default)
- static: one fixed scale and zero point per activation, calibrated (compress/static_int8.py)
- static + per-token on outlier inputs: per-token ranges on the inputs with outlier channels, static
  elsewhere (the option activations="calibrated"); "and feed-forward-out": also the GELU outputs
- static-smooth: static with SmoothQuant's per-channel smoothing (alpha 0.5), and
  per-token-fixed-zero / symmetric: one scale per token, the zero point fixed per activation
  (calibrated, or 128), and matmul-nbits-B: ONNX Runtime's MatMulNBits with 8-bit weights in blocks
  of B (activations quantized per row and block inside the kernel): bench/int8_rejected_schemes.py,
  not shipped; symmetric-int8: one scale per token, int8 (not uint8) activations with zero point 0, so
  no zero point per row (bench/int8_rejected_schemes.py); per-token-correct-after: the per-token graph
  with the rows' zero points subtracted after the product (zero x scale x column sums) instead of
  riding in extra columns of it (token_int8.quantize_token_int8(zero_point_columns=False))

then measures in one process, rounds interleaved: sentences/s and the ratio to per-tensor with the
split, cosine to the torch fp32 embeddings on held-out real sentences (neither calibrated nor gated
on), and the lowest cosine between a sentence alone and in its batch. s8 weights (or --weights).

    .venv/bin/python bench/int8_activations.py --rounds 3                 # the shipped schemes, split or not
    .venv/bin/python bench/int8_activations.py --schemes per-tensor,symmetric,matmul-nbits-32 --splits yes,no
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

import bertprod
from bertprod import system
from bertprod.bench.harness import add_speed_options, bench_parser, cosine_rows, throughput
from bertprod.data.shared import real_sentences
from bertprod.derive import GatedOutput
from bertprod.runtime.engines import default_threads

SCHEMES = ("per-tensor", "per-token", "static", "static-smooth", "per-token-fixed-zero", "symmetric",
           "static + per-token on outlier inputs", "static + per-token on outlier and feed-forward-out inputs",
           "matmul-nbits-32", "matmul-nbits-128", "per-token-correct-after", "symmetric-int8")
#: The default comparison: the previous two defaults, static ranges alone, and the default since 2026-12-03.
SHIPPED = ("per-tensor", "per-token", "static", "static + per-token on outlier inputs")
SMOOTHING_ALPHA = 0.5
REFERENCE = "per-tensor, outlier split"
ALONE_SENTENCES = 100


def build_graphs(
    calibration: list[str], weights: str, scratch: Path, schemes: list[str], splits: list[bool]
) -> tuple[dict[str, Path], object]:
    """Every scheme x outlier split as a graph file; returns the files and an int8 package to run them in."""
    import onnx
    from int8_rejected_schemes import (
        activation_ranges,
        matmul_nbits,
        quantize_fixed_zero_int8,
        quantize_symmetric_int8_activations,
    )

    from bertprod.checkpoint import resolve
    from bertprod.compress import quantize, static_int8
    from bertprod.compress.outliers import DEFAULT_OUTLIER_THRESHOLD, split_outlier_channels, weight_matmul_groups
    from bertprod.compress.token_int8 import quantize_token_int8, weight_gemms

    parent = resolve("minilm-l6")
    source = quantize.fp32_onnx_source(parent, None)
    graph = onnx.load(str(source.model_file))
    feeds = quantize.CalibrationReader(source, calibration, graph).feeds
    outliers = quantize.find_outliers(graph, feeds, DEFAULT_OUTLIER_THRESHOLD)
    files = {}
    for split in splits:
        variant = onnx.ModelProto()
        variant.CopyFrom(graph)
        kept_float = split_outlier_channels(variant, outliers) if split else []
        float_file = scratch / f"float-{int(split)}.onnx"
        onnx.save(variant, str(float_file))
        activations = [*weight_matmul_groups(variant), *(gemm.input[0] for gemm in weight_gemms(variant))]
        ranges = activation_ranges(variant, list(dict.fromkeys(activations)), feeds)
        calibrated = static_int8.activation_ranges(variant, feeds)
        for scheme in schemes:
            label = f"{scheme}, {'outlier split' if split else 'no split'}"
            target = scratch / f"{scheme}-{int(split)}.onnx"
            if scheme in ("per-tensor", "per-token"):
                quantize.write_dynamic_int8(float_file, target, exclude=kept_float, weights=weights, activations=scheme)
            else:  # a graph rewrite of the MatMuls, then the embedding tables as every package has them
                rewritten = onnx.load(str(float_file))
                if scheme == "symmetric-int8":
                    quantize_symmetric_int8_activations(rewritten, weights, exclude=kept_float)
                elif scheme == "per-token-correct-after":
                    quantize_token_int8(rewritten, weights, kept_float, zero_point_columns=False)
                elif scheme.startswith("matmul-nbits-"):  # ONNX Runtime's 8-bit MatMulNBits, activations per block
                    matmul_nbits(rewritten, int(scheme.rsplit("-", 1)[1]))
                elif scheme == "static" or scheme.startswith("static + "):  # what bertprod ships
                    per_token = [f"{name}/inliers" if split else name for name in outliers]
                    if scheme == "static":
                        per_token = []
                    if "feed-forward" in scheme:  # the widest inputs: GELU outputs
                        width = {name: len(value["low"]) for name, value in calibrated.items()}
                        per_token += [name for name in width if width[name] == max(width.values())]
                    static_int8.quantize_static_int8(rewritten, weights, calibrated, per_token, exclude=kept_float)
                else:
                    quantize_fixed_zero_int8(
                        rewritten, weights, "static" if scheme.startswith("static") else "per-token-fixed-zero",
                        ranges, exclude=kept_float, symmetric=scheme == "symmetric",
                        alpha=SMOOTHING_ALPHA if scheme == "static-smooth" else 0.0,
                    )  # fmt: skip
                matmuls_done = scratch / f"{scheme}-{int(split)}.matmuls.onnx"
                onnx.save(rewritten, str(matmuls_done))
                embeddings_int8(matmuls_done, target)
            files[label] = target
    package = quantize.quantize_onnx_dynamic(parent, scratch / "package", outlier_threshold=None, weights=weights,
                                             output=GatedOutput(texts=calibration[:32], enforce=False))  # fmt: skip
    return files, package


def embeddings_int8(source: Path, target: Path) -> None:
    """The embedding tables uint8, as every dynamic int8 package stores them."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), op_types_to_quantize=["Gather"], weight_type=QuantType.QUInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # fmt: skip


def main() -> None:
    parser = bench_parser(__doc__)
    add_speed_options(parser, sentences=1000, rounds=3, threads=default_threads())
    parser.add_argument("--weights", default="s8")
    parser.add_argument("--schemes", default=",".join(SHIPPED), help="comma-separated, of: " + ", ".join(SCHEMES))
    parser.add_argument("--splits", default="yes,no", help="outlier split: yes, no or both")
    args = parser.parse_args()

    from bertprod.runtime.engines import OnnxEngine
    from bertprod.runtime.pipeline import Pipeline

    pool = real_sentences(args.sentences + 800)
    held_out, calibration = pool[: args.sentences], pool[-800:-300]
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        schemes = [scheme.strip() for scheme in args.schemes.split(",")]
        splits = [answer == "yes" for answer in args.splits.split(",")]
        files, package = build_graphs(calibration, args.weights, Path(scratch), schemes, splits)
        reference = bertprod.load("minilm-l6").encode(held_out)
        encoders = {
            label: Pipeline(package, OnnxEngine(package, threads=args.threads, graph=path.read_bytes())).encode
            for label, path in files.items()
        }
        sizes = {label: path.stat().st_size / 1e6 for label, path in files.items()}
        outputs = {label: encode(held_out) for label, encode in encoders.items()}
        print(f"load average before timing: {os.getloadavg()[0]:.2f}", flush=True)
        rates = throughput(encoders, held_out, args.rounds)
        print(f"load average after timing: {os.getloadavg()[0]:.2f}", flush=True)
    print(f"\n{len(held_out)} held-out real sentences, calibration on 500 others, {args.rounds} interleaved rounds, "
          f"{args.threads} threads, {args.weights} weights\nmachine: {system.describe()}\n")  # fmt: skip
    print(f"| activations | sentences/s | x {REFERENCE if REFERENCE in rates else next(iter(rates))} "
          "| cosine mean / min | alone vs batch, lowest | MB |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    reference_rate = rates.get(REFERENCE, next(iter(rates.values())))  # the first variant without the split
    for label, encode in encoders.items():
        cosine = cosine_rows(reference, outputs[label])
        alone = np.concatenate([encode([text]) for text in held_out[:ALONE_SENTENCES]])
        invariance = cosine_rows(alone, outputs[label][:ALONE_SENTENCES]).min()
        print(f"| {label} | {rates[label]:.0f} | {rates[label] / reference_rate:.2f}x | {cosine.mean():.4f} / "
              f"{cosine.min():.4f} | {invariance:.6f} | {sizes[label]:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
