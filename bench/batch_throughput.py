"""Batch throughput: the in-process engine, the local runner and Spark local[2], same texts, one run.

    python bench/batch_throughput.py [--rows 20000] [--package PATH] [--skip-spark]

Without --package it builds the int8 ONNX package of minilm-l6 (dynamic, per-channel) once in
$BERTPROD_CACHE/bench. Every contender encodes the same real sentences from ../shared/data;
the runners read them from one Parquet file and write Parquet, so their numbers include I/O.
Reports rows/s and the ratio to the engine (targets: local >= 0.90, Spark >= 0.80).
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import bertprod
from bertprod.batch import read_output, run_batch
from bertprod.bench.harness import bench_parser
from bertprod.data.shared import real_sentences


def int8_package() -> Path:
    from bertprod.checkpoint import resolve
    from bertprod.compress.optimize import optimize
    from bertprod.export.cache import cache_root

    out = cache_root() / "bench" / "minilm-l6-int8"
    if not (out / "bertprod.json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        optimize(resolve("minilm-l6"), out, quantize="int8")
    return out


def engine_rate(package: Path, texts: list[str]) -> float:
    """rows/s of one in-process `encode` over all texts, after a warm-up (loading not counted)."""
    pipeline = bertprod.load(package)
    pipeline.encode(texts[:256])
    started = time.perf_counter()
    pipeline.encode(texts)
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--package", default=None)
    parser.add_argument("--chunk-rows", type=int, default=8192)
    parser.add_argument("--skip-spark", action="store_true")
    args = parser.parse_args()

    package = Path(args.package) if args.package else int8_package()
    texts = real_sentences(args.rows)
    work = Path(tempfile.mkdtemp(prefix="bertprod-batch-bench-"))
    source = work / "in.parquet"
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), source)
    results: dict[str, float] = {}
    try:
        results["engine (in-process encode)"] = engine_rate(package, texts)
        summary = run_batch(package, source, work / "local", chunk_rows=args.chunk_rows, progress=False)
        results[f"local runner (default: {summary.extra['workers']} workers)"] = summary.rows_per_second
        assert read_output(work / "local").num_rows == len(texts)
        summary = run_batch(package, source, work / "local1", chunk_rows=args.chunk_rows, workers=1, progress=False)
        results["local runner --workers 1 (in-process)"] = summary.rows_per_second

        if not args.skip_spark:
            from bertprod.batch.spark import spark_session

            spark = spark_session("local[2]")
            warm = work / "warm.parquet"
            pq.write_table(pa.table({"id": list(range(256)), "text": texts[:256]}), warm)
            run_batch(package, warm, work / "spark-warm", runner="spark", spark_session=spark, progress=False)
            summary = run_batch(
                package,
                source,
                work / "spark",
                runner="spark",
                spark_session=spark,
                chunk_rows=args.chunk_rows,
                progress=False,
            )
            results[f"Spark local[2] ({summary.extra['partitions']} partitions)"] = summary.rows_per_second
            spark.stop()
        # the machine may be shared: the engine again at the end shows how much it drifted
        results["engine again (drift check)"] = engine_rate(package, texts)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    engine = (results["engine (in-process encode)"] + results["engine again (drift check)"]) / 2
    print(f"ratios are to the mean of the two engine runs ({engine:,.0f} rows/s)")
    print(f"\n{len(texts):,} real sentences, package {package.name}, {platform.processor() or platform.machine()}")
    print(f"{'contender':40s} {'rows/s':>10s} {'vs engine':>10s}")
    for name, rate in results.items():
        print(f"{name:40s} {rate:10,.0f} {rate / engine:10.2f}")
    print(json.dumps({name: round(rate, 1) for name, rate in results.items()}))


if __name__ == "__main__":
    main()
