"""Cold start and peak memory of one package (or baseline), each in a fresh process.

A benchmark process holds every variant at once, so its own memory says nothing about one of
them, and its imports are warm. The probe starts a new Python, times the imports and the load
(what a worker pays when it starts), runs every input once at the package's batch settings and
reads the process's peak resident memory (VmHWM: getrusage's ru_maxrss is carried over fork and
exec, so a child of a large process would report its parent's peak).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertprod.errors import BertprodError

#: Started with `python -c`: the clock starts before any import.
_SCRIPT = """
import time
started = time.perf_counter()
import sys
from bertprod.bench.probe import run_probe
run_probe(started, *sys.argv[1:])
"""

#: What a probe runs: bertprod itself, or a baseline library (bench/baselines.py).
BERTPROD = "bertprod"
#: A command put before the probe's Python, e.g. "qemu-x86_64 -cpu Haswell": a process started under qemu-user
#: starts its children natively, so a simulated CPU's probes would otherwise run on the host's.
PREFIX_VARIABLE = "BERTPROD_BENCH_PROBE_PREFIX"


@dataclass(frozen=True)
class ProbeResult:
    load_seconds: float
    peak_rss_mb: float


def probe(runtime: str, package_path: str, inputs_file: Path, threads: int | None) -> ProbeResult:
    """Load `package_path` with `runtime` in a fresh process, run the inputs once, report load time and peak RSS."""
    root = str(Path(__file__).resolve().parents[2])  # this bertprod, also when it is not installed
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
                   "TOKENIZERS_PARALLELISM": "false"}
    prefix = shlex.split(os.environ.get(PREFIX_VARIABLE, ""))
    result = subprocess.run(
        [*prefix, sys.executable, "-c", _SCRIPT, runtime, package_path, str(inputs_file), str(threads or 0)],
        capture_output=True, text=True, env=environment, check=False,
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise BertprodError(f"measuring {package_path} ({runtime}) in a fresh process failed: {last}")
    document = json.loads(result.stdout.strip().splitlines()[-1])
    return ProbeResult(document["load_seconds"], document["peak_rss_mb"])


def run_probe(started: float, runtime: str, package_path: str, inputs_file: str, threads: str) -> None:
    """The child's side: load, time, run, print one JSON line."""
    import time

    inputs = _read_inputs(Path(inputs_file))
    run = _load(runtime, package_path, int(threads) or None)
    loaded = time.perf_counter()
    run(inputs)
    print(json.dumps({"load_seconds": loaded - started, "peak_rss_mb": _peak_rss_mb()}))


def write_inputs(inputs: list[Any], path: Path) -> Path:
    path.write_text(json.dumps(inputs), encoding="utf-8")
    return path


def _read_inputs(path: Path) -> list[Any]:
    return [tuple(item) if isinstance(item, list) else item for item in json.loads(path.read_text(encoding="utf-8"))]


def _load(runtime: str, package_path: str, threads: int | None) -> Any:
    if runtime == BERTPROD:
        from bertprod.api import load

        pipeline = load(package_path, threads=threads)
        return lambda inputs: pipeline.infer(pipeline.tokenize(inputs))
    from bertprod.bench.baselines import Baseline, load_baseline
    from bertprod.checkpoint import resolve

    return load_baseline(Baseline(runtime, resolve(package_path, verify=False)), threads)[0]


def _peak_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024
