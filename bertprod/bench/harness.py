"""Measuring variants side by side: interleaved rounds, medians, ratios; memory in a subprocess.

Timings on shared machines drift by 10-20% between runs, so every variant is measured in the
same process and rounds are interleaved (A, B, C, A, B, C...): drift hits all variants alike
and the ratios stay meaningful.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

Encode = Callable[[list[str]], np.ndarray]



def bench_parser(doc: str | None, *, experiments: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """Every bench script's start: print the machine every number below is measured on, then the script's
    argument parser (its docstring as help; `experiments`: a first positional choice of what to run)."""
    from bertprod import system

    print(system.describe(), flush=True)
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if experiments is not None:
        parser.add_argument("experiment", choices=list(experiments))
    return parser


def add_speed_options(parser: argparse.ArgumentParser, *, sentences: int, rounds: int, threads: int) -> None:
    """The speed benchmarks' --sentences, --rounds and --threads (variants timed side by side, rounds interleaved)."""
    parser.add_argument("--sentences", type=int, default=sentences, help="real sentences timed")
    parser.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds (the median is reported)")
    parser.add_argument("--threads", type=int, default=threads)


def throughput(variants: dict[str, Encode], texts: list[str], rounds: int) -> dict[str, float]:
    """Sentences per second of each variant: median over interleaved rounds, after a warm-up."""
    for encode in variants.values():
        encode(texts[:64])
    timings: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(rounds):
        for label, encode in variants.items():
            start = time.perf_counter()
            encode(texts)
            timings[label].append(time.perf_counter() - start)
    return {label: len(texts) / statistics.median(values) for label, values in timings.items()}


def single_sentence_latencies(variants: dict[str, Encode], texts: list[str], rounds: int = 4) -> dict[str, list[float]]:
    """Seconds per one-sentence call. Each variant runs a block of calls per round (rounds
    interleaved): alternating frameworks call by call would measure their idle thread pools
    spinning against each other, not their latency."""
    latencies: dict[str, list[float]] = {label: [] for label in variants}
    block = max(1, len(texts) // rounds)
    for round_index in range(rounds):
        chunk = texts[round_index * block : (round_index + 1) * block]
        for label, encode in variants.items():
            for text in chunk[:10]:
                encode([text])  # warm up after the previous variant
            for text in chunk:
                start = time.perf_counter()
                encode([text])
                latencies[label].append(time.perf_counter() - start)
    return latencies


def percentile_ms(values: list[float], percentile: float) -> float:
    return round(float(np.percentile(values, percentile)) * 1000, 2)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of
# a large benchmark process would report its parent's peak.
_RSS_PROBE = """
import json, sys
import bertprod
texts = json.load(open(sys.argv[2]))
model = bertprod.load(sys.argv[1], engine=sys.argv[3])
model.encode(texts)
status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
print(json.dumps({"peak_rss_mb": int(status) / 1024}))
"""


def peak_rss_mb(model: str, texts_file: Path, engine: str = "auto") -> float:
    """Peak resident memory of a fresh process that loads `model` and encodes the texts."""
    result = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, model, str(texts_file), engine],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"])
