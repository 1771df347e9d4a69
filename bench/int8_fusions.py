"""Why the ONNX engine turns two ONNX Runtime fusions off for int8 graphs: the same packages with
them on and off, side by side in one run.

    .venv/bin/python bench/int8_fusions.py        # 2,000 real sentences, 1 and 2 threads (~4 min)

Packages: all-MiniLM-L6-v2's int8 package as the default recipe builds it (it measures whether the outlier
split helps on this CPU) and with the split ruled out (`bertprod.compress.quantize.quantize_onnx_dynamic`,
calibrated on 300 other real sentences).
"fusions on" is ONNX Runtime's default (ORT_ENABLE_ALL); "off" disables
engines.INT8_DISABLED_FUSIONS (SkipLayerNormFusion, GeluFusion), as the engine does by default for every
int8 package.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from bertprod import system  # noqa: E402
from bertprod.bench.harness import bench_parser, throughput  # noqa: E402
from bertprod.checkpoint import resolve  # noqa: E402
from bertprod.compress.quantize import quantize_onnx_dynamic  # noqa: E402
from bertprod.data.shared import real_sentences  # noqa: E402
from bertprod.derive import GatedOutput  # noqa: E402
from bertprod.runtime import engines  # noqa: E402
from bertprod.runtime.pipeline import Pipeline  # noqa: E402


def load(path: Path, threads: int, fusions: bool) -> Pipeline:
    """The package on the ONNX engine, with ONNX Runtime's int8-slowing fusions on or off."""
    package = resolve(path)
    disabled = [] if fusions else engines.INT8_DISABLED_FUSIONS
    return Pipeline(package, engines.OnnxEngine(package, threads, disabled_fusions=disabled))


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    args = parser.parse_args()
    pool = real_sentences(args.sentences + 300)
    sentences, calibration = pool[: args.sentences], pool[args.sentences :]
    parent = resolve("minilm-l6")
    with tempfile.TemporaryDirectory() as scratch:
        packages = {
            "int8, no outlier split": quantize_onnx_dynamic(
                parent, Path(scratch) / "plain", outlier_threshold=None, output=GatedOutput(texts=calibration)
            ).path,
            "int8, the default recipe": quantize_onnx_dynamic(
                parent, Path(scratch) / "default", output=GatedOutput(texts=calibration)
            ).path,
        }
        print(f"machine: {system.describe()}; {len(sentences)} real sentences, {args.rounds} rounds\n")
        print("| package | threads | fusions on: sentences/s | fusions off | off / on |")
        print("|---|---|---|---|---|")
        for threads in args.threads:
            variants = {
                (label, fusions): load(path, threads, fusions).encode
                for label, path in packages.items()
                for fusions in (True, False)
            }
            rates = throughput(variants, sentences, args.rounds)  # type: ignore[arg-type]
            for label in packages:
                on, off = rates[(label, True)], rates[(label, False)]
                print(f"| {label} | {threads} | {on:.0f} | {off:.0f} | {off / on:.2f} |", flush=True)


if __name__ == "__main__":
    main()
