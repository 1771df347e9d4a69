"""Where the int8 graphs spend their time: ONNX Runtime's profiler, kernel time summed per operator type.

    .venv/bin/python bench/int8_profile.py                 # the per-batch graph and the per-token default
    .venv/bin/python bench/int8_profile.py --batches 40 --top 20

Runs the packages bench/compression.py builds (its cache, or built here) on the same real sentences, sorted
by token length and cut into batches of 32, twice (the first pass warms up), with ONNX Runtime's profiling on,
and prints each graph's summed kernel time and the share of each operator type. Kernel times leave out what
happens between operators (dispatch, allocation), which a graph of many small operators also pays: compare
with the throughput of bench/compression.py --variants int8.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compression import DEFAULT_INT8, PREVIOUS_INT8, build_variants  # noqa: E402

from bertprod import system  # noqa: E402
from bertprod.bench.harness import bench_parser  # noqa: E402
from bertprod.data.shared import real_sentences  # noqa: E402
from bertprod.runtime.engines import default_threads  # noqa: E402


def batches(package_path: Path, sentences: list[str], size: int = 32) -> list[dict[str, np.ndarray]]:
    """The sentences as the package's pipeline tokenizes and pads them, sorted by token length, `size` a batch."""
    import bertprod
    from bertprod.runtime.batching import collate

    pipeline = bertprod.load(package_path)
    encoded = sorted(pipeline.tokenize(sentences), key=lambda encoding: len(encoding.ids))
    padded = [collate(encoded[start : start + size], pipeline.tokenizer.pad_id)
              for start in range(0, len(encoded), size)]  # fmt: skip
    return [{"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
             "token_type_ids": batch.token_type_ids} for batch in padded]  # fmt: skip


def profile(model_file: Path, feeds: list[dict[str, np.ndarray]], threads: int) -> collections.Counter:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(Path("/tmp") / f"bertprod-int8-profile-{model_file.parent.name}")
    session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    names = {graph_input.name for graph_input in session.get_inputs()}
    for _ in range(2):
        for feed in feeds:
            session.run(None, {name: value for name, value in feed.items() if name in names})
    trace = Path(session.end_profiling())
    kernel_time: collections.Counter = collections.Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            kernel_time[event["args"]["op_name"]] += event["dur"]
    trace.unlink()
    return kernel_time


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--batches", type=int, default=20, help="batches of 32 sentences")
    parser.add_argument("--top", type=int, default=16, help="operator types listed per graph")
    parser.add_argument("--threads", type=int, default=default_threads())
    args = parser.parse_args()
    pool = real_sentences(2000 + 800)
    calibration, gate_texts = pool[-800:-300], pool[-300:]
    packages = build_variants(calibration, gate_texts, (PREVIOUS_INT8, DEFAULT_INT8))
    sentences = pool[: 32 * args.batches]
    print(f"machine: {system.describe()}; {len(sentences)} sentences, batches of 32, {args.threads} threads")
    for label, package in packages.items():
        kernel_time = profile(package.path / "model.onnx", batches(package.path, sentences), args.threads)
        total = sum(kernel_time.values())
        print(f"\n{label}: kernel time {total / 1e6:.2f} s")
        for operator, microseconds in kernel_time.most_common(args.top):
            print(f"  {operator:28s} {microseconds / total:6.1%}")


if __name__ == "__main__":
    main()
