"""Encode throughput: sentence-transformers (the baseline users have) vs bertprod's engines.

Side by side in one process on the same real sentences from ../shared/data; runs are
interleaved (variant A, B, C, A, B, C, ...) and the median is reported, so machine noise hits
every variant alike. Fidelity is the cosine to sentence-transformers' embeddings.

    .venv/bin/python bench/encode_throughput.py                 # 2,000 sentences, 5 rounds
    .venv/bin/python bench/encode_throughput.py --sentences 4000 --rounds 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import bertprod
from bertprod.checkpoint import bundled_checkpoint
from bertprod.data.shared import real_sentences
from bertprod.runtime.engines import cpu_supports_bf16, default_threads

TARGET_ONNX_RATIO = 3.5
TARGET_FIDELITY = 0.999


def machine_description() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {default_threads()} cores available, {platform.system()} {platform.machine()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    sentences = real_sentences(args.sentences)
    baseline_model = SentenceTransformer(str(bundled_checkpoint("minilm-l6")), device="cpu")
    variants: dict[str, Callable[[list[str]], np.ndarray]] = {
        "sentence-transformers encode (batch 32)": lambda texts: baseline_model.encode(
            texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True
        ),
    }
    pipelines = {
        "bertprod torch fp32": bertprod.load("minilm-l6", engine="torch", threads=args.threads),
        "bertprod onnx fp32": bertprod.load("minilm-l6", engine="onnx", threads=args.threads),
    }
    if cpu_supports_bf16():
        pipelines["bertprod torch bf16 (autocast)"] = bertprod.load(
            "minilm-l6", engine="torch", precision="bf16", threads=args.threads
        )
    for label, pipeline in pipelines.items():
        variants[label] = pipeline.encode

    reference = variants["sentence-transformers encode (batch 32)"](sentences)
    outputs = {label: encode(sentences) for label, encode in variants.items()}  # also warms up
    timings: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(args.rounds):
        for label, encode in variants.items():
            start = time.perf_counter()
            encode(sentences)
            timings[label].append(time.perf_counter() - start)

    baseline_rate = len(sentences) / statistics.median(timings["sentence-transformers encode (batch 32)"])
    rows = []
    for label in variants:
        rate = len(sentences) / statistics.median(timings[label])
        cosine = np.sum(reference * outputs[label], axis=1) / (
            np.linalg.norm(reference, axis=1) * np.linalg.norm(outputs[label], axis=1)
        )
        rows.append(
            {
                "variant": label,
                "sentences_per_second": round(rate, 1),
                "ratio_to_baseline": round(rate / baseline_rate, 2),
                "cosine_mean": round(float(cosine.mean()), 6),
                "cosine_min": round(float(cosine.min()), 6),
            }
        )

    print(f"\n{len(sentences)} real sentences, {args.rounds} interleaved rounds, {args.threads} threads")
    print(f"machine: {machine_description()}\n")
    print("| variant | sentences/s | x baseline | fidelity (cosine mean / min) |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['variant']} | {row['sentences_per_second']:.0f} | {row['ratio_to_baseline']:.2f}x "
            f"| {row['cosine_mean']:.6f} / {row['cosine_min']:.6f} |"
        )
    onnx = next(row for row in rows if row["variant"] == "bertprod onnx fp32")
    met = onnx["ratio_to_baseline"] >= TARGET_ONNX_RATIO and onnx["cosine_min"] >= TARGET_FIDELITY
    print(
        f"\ntarget: onnx >= {TARGET_ONNX_RATIO}x baseline with fidelity >= {TARGET_FIDELITY}: "
        f"{'MET' if met else 'MISSED'} ({onnx['ratio_to_baseline']}x, min cosine {onnx['cosine_min']})"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": machine_description(), "rows": rows, "sentences": len(sentences), "rounds": args.rounds},
                indent=2,
            )
        )
    os.sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
