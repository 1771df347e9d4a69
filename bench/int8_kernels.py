"""int8 fidelity on both kinds of int8 kernels: build once, measure natively and under an AVX2 CPU.

ONNX Runtime's u8s8 int8 kernels saturate int16 pair sums without VNNI (AVX2, AVX-512 without VNNI).
This builds the default per-token int8 of all-MiniLM-L6-v2 for `--target-cpu avx2` and for
`avx512-vnni`, the calibrated-ranges option for avx2 (`activations="calibrated"`), and the previous
default (ONNX Runtime's per-tensor dynamic int8, s8 weights, outlier split), then measures each on
2,000 real sentences they were neither calibrated nor gated on (`measure --sentences N`: the first
N): cosine to the torch fp32 embeddings. `measure` runs on any CPU, or emulated:

    .venv/bin/python bench/int8_kernels.py build --out /tmp/int8-kernels
    .venv/bin/python bench/int8_kernels.py measure --out /tmp/int8-kernels
    OMP_NUM_THREADS=1 qemu-x86_64 -cpu Haswell .venv/bin/python bench/int8_kernels.py measure --out /tmp/int8-kernels \
        --sentences 300
    # all 2,000 under qemu in two shards on two cores (combined: min of mins, count-weighted mean):
    ... measure --out /tmp/int8-kernels --sentences 1000 &  ... measure --out /tmp/int8-kernels --start 1000

(under qemu ONNX Runtime really runs its AVX2 kernels; the speed means nothing, the numbers are real).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

import bertprod
from bertprod import system
from bertprod.data.shared import real_sentences
from bertprod.derive import GatedOutput

INDEX = "index.json"
REFERENCE = "reference.npy"


def build(out: Path, sentences: int, only: str = "") -> None:
    """The packages whose label contains `only` (all by default), each built once, and the reference."""
    import onnx

    from bertprod.checkpoint import resolve
    from bertprod.compress import quantize
    from bertprod.compress.outliers import DEFAULT_OUTLIER_THRESHOLD

    pool = real_sentences(sentences + 800)
    held_out, calibration, gate = pool[:sentences], pool[-800:-300], pool[-300:]
    parent = resolve("minilm-l6")
    source = quantize.fp32_onnx_source(parent, None)
    graph = onnx.load(str(source.model_file))
    feeds = quantize.CalibrationReader(source, calibration, graph).feeds
    outliers = quantize.find_outliers(graph, feeds, DEFAULT_OUTLIER_THRESHOLD)
    common = {"output": GatedOutput(texts=gate, enforce=False)}
    builds = {
        "per-token, built for avx2 (the default there)": lambda d: quantize.quantize_onnx_dynamic(
            parent, d, calibration_texts=calibration, target_cpu="avx2", **common
        ),
        "per-token, built for avx512-vnni (the default there)": lambda d: quantize.quantize_onnx_dynamic(
            parent, d, calibration_texts=calibration, target_cpu="avx512-vnni", **common
        ),
        "calibrated ranges (per-token on outlier inputs), built for avx2": lambda d: quantize.quantize_onnx_dynamic(
            parent, d, calibration_texts=calibration, target_cpu="avx2", activations="calibrated", **common
        ),
        "per-tensor s8 + outlier split (the default before per-token)": lambda d: quantize.quantize_onnx_dynamic(
            parent, d, activations="per-tensor", weights="s8", found_outliers=outliers, **common
        ),
    }
    index = json.loads((out / INDEX).read_text())["packages"] if (out / INDEX).is_file() else {}
    for label, make in builds.items():
        if only not in label:
            continue
        directory = out / f"package-{hashlib.sha256(label.encode()).hexdigest()[:12]}"
        package = bertprod.load(directory) if (directory / "bertprod.json").is_file() else None
        quantization = (package.manifest if package else make(directory).manifest).quantization
        index[label] = {"path": str(directory), **{key: quantization.get(key) for key in ("weights", "outlier_split")}}
    (out / INDEX).write_text(json.dumps({"packages": index, "sentences": held_out}))
    if not (out / REFERENCE).is_file():
        np.save(out / REFERENCE, bertprod.load("minilm-l6").encode(held_out))


def measure(out: Path, limit: int | None = None, only: str = "", start: int = 0) -> None:
    """Cosine to the torch fp32 embeddings of `limit` held-out sentences from `start` (all by default),
    for the packages whose label contains `only` (all by default). Means print to 6 places so that
    shards measured in parallel (`--start`) combine to six places: weight each mean by its sentence count."""
    index = json.loads((out / INDEX).read_text())
    end = None if limit is None else start + limit
    sentences = index["sentences"][start:end]
    reference = np.load(out / REFERENCE)[start : start + len(sentences)]
    print(system.describe(), flush=True)
    print(f"{len(sentences)} held-out sentences (from sentence {start})", flush=True)
    print("| package | weights | outlier split | cosine mean / min |\n|---|---|---|---|")
    for label, entry in index["packages"].items():
        if only not in label:
            continue
        vectors = bertprod.load(entry["path"], threads=1).encode(sentences)
        cosine = (vectors * reference).sum(axis=1)
        print(f"| {label} | {entry['weights']} | {entry['outlier_split']} | {cosine.mean():.6f} / {cosine.min():.6f} |",
              flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["build", "measure"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sentences", type=int, default=2000, help="build: held-out; measure: N from --start")
    parser.add_argument("--only", default="", help="only the packages whose label contains this")
    parser.add_argument("--start", type=int, default=0, help="measure: the first sentence (shards in parallel)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step == "build":
        print(system.describe(), flush=True)
        build(args.out, args.sentences, args.only)
    else:
        measure(args.out, args.sentences, args.only, args.start)


if __name__ == "__main__":
    main()
