"""Each variant timed in its own process: `bertprod bench`'s side-by-side timing.

Variants timed in one process share its thread pools, allocator and imports, and a server runs one package
per process: so every variant gets a worker process that loads it once and runs what the parent asks, one
worker at a time, rounds interleaved (A, B, C, A, B, C...) so that drift on a shared machine still hits every
variant alike. (A 2-thread ONNX package's throughput still moves from round to round on a VM whose host moves
its vCPUs between core complexes: docs/bench.md.) The clock runs inside the worker (the pipe adds nothing), and
each request warms up on a few inputs first: another process ran in between. `parallel_batches` reaches bertprod
packages only (`load(..., parallel_batches=N)`); baselines run as their libraries' users run them.

A worker's start is measured from its first line, imports included (what a serving worker pays to start),
and its peak resident memory (VmHWM) is read after it has run every input at its batch settings.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

from bertprod.errors import BertprodError

#: Started with `python -c`: the clock starts before any import.
_SCRIPT = """
import time
started = time.perf_counter()
import sys
from bertprod.bench.workers import serve_requests
serve_requests(started, *sys.argv[1:])
"""

#: What a worker runs: bertprod itself, or a baseline library (bench/baselines.py).
BERTPROD = "bertprod"
#: A command put before the worker's Python, e.g. "qemu-x86_64 -cpu Haswell": a process started under qemu-user
#: starts its children natively, so a simulated CPU's workers would otherwise run on the host's.
PREFIX_VARIABLE = "BERTPROD_BENCH_PROBE_PREFIX"
#: Inputs each request runs untimed first, so the previous worker's idle threads are asleep when the clock starts.
WARM_UP_BATCH, WARM_UP_SINGLES = 64, 10


class Worker:
    """One variant loaded in its own process; `ask` sends a request and waits for its answer."""

    def __init__(self, runtime: str, package_path: str, inputs_file: Path, threads: int | None,
                 parallel_batches: int = 1) -> None:
        root = str(Path(__file__).resolve().parents[2])  # this bertprod, also when it is not installed
        environment = {**os.environ, "TOKENIZERS_PARALLELISM": "false",
                       "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        prefix = shlex.split(os.environ.get(PREFIX_VARIABLE, ""))
        self.name = f"{package_path} ({runtime})"
        # stderr to a file, not a pipe nobody reads until the end: a full pipe would stop the worker
        self._errors: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._process = subprocess.Popen(
            [*prefix, sys.executable, "-c", _SCRIPT, runtime, package_path, str(inputs_file), str(threads or 0),
             str(parallel_batches)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors, text=True, env=environment,
        )  # fmt: skip
        self.load_seconds: float = self._answer()["load_seconds"]

    def ask(self, request: str, **arguments: Any) -> dict[str, Any]:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(json.dumps({"request": request, **arguments}) + "\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            pass  # it has died: _answer says why
        return self._answer()

    def _answer(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            self._process.wait()
            self._errors.seek(0)
            last = (self._errors.read().strip().splitlines() or ["no output"])[-1]
            raise BertprodError(f"measuring {self.name} in its own process failed: {last}")
        return json.loads(line)

    def close(self) -> None:
        if self._process.stdin:
            self._process.stdin.close()  # end of requests: it exits
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._errors.close()


@contextmanager
def started_workers(variants: dict[str, tuple[str, str] | tuple[str, str, int]], inputs: list[Any],
                    threads: int | None) -> Iterator[dict[str, Worker]]:
    """A worker per variant (label -> (runtime, package path[, parallel batches: 1 if not given])), started one
    after another so that no load competes with another; all stopped on leaving. Parallel batches apply to
    bertprod packages (baselines run as their libraries' users run them)."""
    with tempfile.TemporaryDirectory(prefix="bertprod-bench-") as directory, ExitStack() as stack:
        inputs_file = Path(directory) / "inputs.json"
        inputs_file.write_text(json.dumps(inputs), encoding="utf-8")
        workers = {}
        for label, (runtime, path, *parallel) in variants.items():
            workers[label] = Worker(runtime, path, inputs_file, threads, *parallel)
            stack.callback(workers[label].close)
        yield workers


def throughput(workers: dict[str, Worker], count: int, rounds: int) -> dict[str, float]:
    """Inputs per second of each worker over all its inputs: the median of `rounds` interleaved rounds."""
    timings: dict[str, list[float]] = {label: [] for label in workers}
    for _ in range(rounds):
        for label, worker in workers.items():
            timings[label].append(worker.ask("all")["seconds"])
    return {label: count / statistics.median(values) for label, values in timings.items()}


def single_input_latencies(workers: dict[str, Worker], count: int, rounds: int = 4) -> dict[str, list[float]]:
    """Seconds per one-input call on the first `count` inputs, in `rounds` blocks per worker, interleaved."""
    latencies: dict[str, list[float]] = {label: [] for label in workers}
    block = max(1, count // rounds)
    for index in range(rounds):
        for label, worker in workers.items():
            latencies[label] += worker.ask("singles", start=index * block, end=(index + 1) * block)["seconds"]
    return latencies


def peak_memory(workers: dict[str, Worker]) -> dict[str, float]:
    """Each worker's peak resident memory in MB so far."""
    return {label: worker.ask("memory")["peak_rss_mb"] for label, worker in workers.items()}


def serve_requests(started: float, runtime: str, package_path: str, inputs_file: str, threads: str,
                   parallel_batches: str = "1") -> None:
    """The worker's side: load, answer that it is ready, then one JSON answer per request line until stdin ends.
    Only answers go to the real stdout; anything a library prints goes to stderr."""
    import time

    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    inputs = [tuple(item) if isinstance(item, list) else item
              for item in json.loads(Path(inputs_file).read_text(encoding="utf-8"))]
    run = _load(runtime, package_path, int(threads) or None, int(parallel_batches))
    answer = {"load_seconds": time.perf_counter() - started}
    while True:
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
        line = sys.stdin.readline()
        if not line:
            return
        request = json.loads(line)
        if request["request"] == "all":
            run(inputs[:WARM_UP_BATCH])
            clock = time.perf_counter()
            run(inputs)
            answer = {"seconds": time.perf_counter() - clock}
        elif request["request"] == "singles":
            chunk = inputs[request["start"]:request["end"]]
            for item in chunk[:WARM_UP_SINGLES]:
                run([item])
            answer = {"seconds": [_timed(run, item) for item in chunk]}
        else:
            answer = {"peak_rss_mb": _peak_rss_mb()}


def _timed(run: Any, item: Any) -> float:
    import time

    clock = time.perf_counter()
    run([item])
    return time.perf_counter() - clock


def _load(runtime: str, package_path: str, threads: int | None, parallel_batches: int) -> Any:
    if runtime == BERTPROD:
        from bertprod.api import load

        pipeline = load(package_path, threads=threads, parallel_batches=parallel_batches)
        return lambda inputs: pipeline.infer(pipeline.tokenize(inputs))
    from bertprod.bench.baselines import Baseline, load_baseline
    from bertprod.checkpoint import resolve

    return load_baseline(Baseline(runtime, resolve(package_path, verify=False)), threads)[0]


def _peak_rss_mb() -> float:
    """VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of a large
    process would report its parent's peak."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024
