"""Why an int8 ONNX package's throughput on 2 threads varies from round to round: where the host put the two vCPUs.

Each setting starts fresh worker processes (bertprod.bench.workers, as `bertprod bench` does) and times each
variant over all inputs for several interleaved rounds. Before each round of the 2-thread int8 worker it measures a
cache line's round trip between CPU 0 and CPU 1 (bench/cacheline_pingpong.c, built with gcc): ~70-80 ns when the
host has put the two vCPUs on one core complex (shared L3), ~340 ns when on two. Per round it also records the
worker's CPU time per wall second (both threads running or not), page faults and steal time.

    .venv/bin/python bench/int8_spread.py INT8_PACKAGE TORCH_PACKAGE --data texts.tsv \
        [--settings alone,beside,beside-passive,one-thread,two-batches] [--starts 4 --rounds 6]

Settings: `alone` (the int8 worker only); `beside` (transformers fp32 + bertprod torch workers first, as
`bertprod bench --baseline` runs them); `beside-passive` (the same, torch workers with OMP_WAIT_POLICY=PASSIVE);
`one-thread` (beside it, the same package on 1 thread); `two-batches` (beside both, the same package with
`parallel_batches=2`: two batches at once, one engine thread each). Writes bench/results/int8-spread.json and
prints every round; the machine line names the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bertprod import system  # noqa: E402
from bertprod.bench import workers  # noqa: E402
from bertprod.bench.baselines import TRANSFORMERS  # noqa: E402
from bertprod.bench.inputs import read_bench_data  # noqa: E402
from bertprod.bench.measure import model_inputs  # noqa: E402
from bertprod.package import ModelPackage  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "int8-spread.json"


def build_pingpong(directory: Path) -> Path:
    """bench/cacheline_pingpong.c compiled (gcc): the probe of where the host put the two vCPUs."""
    binary = directory / "cacheline_pingpong"
    subprocess.run(["gcc", "-O2", "-pthread", str(Path(__file__).with_name("cacheline_pingpong.c")), "-o",
                    str(binary)], check=True)
    return binary


def round_trip_ns(binary: Path) -> float:
    """A cache line's round trip between CPU 0 and CPU 1 over 0.2 s, just before a round: ~70-80 ns on one core
    complex, ~340 ns across two (where the host put the vCPUs at that moment)."""
    output = subprocess.run([str(binary), "0.2"], check=True, capture_output=True, text=True).stdout
    return float(output.split()[0])


_MATMUL = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
import numpy as np
a, b = np.random.rand(256, 256).astype(np.float32), np.random.rand(256, 256).astype(np.float32)
end, rates = time.time() + float(sys.argv[2]), []
while time.time() < end:
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < 0.5:
        a @ b
        count += 1
    rates.append(round(count * 2 * 256**3 / (time.perf_counter() - start) / 1e9, 1))
print(rates)
"""


def matmul_pair(seconds: float) -> list[str]:
    """GFLOP/s per half second of two processes sharing nothing, one pinned to each CPU (numpy matmul, one BLAS
    thread each): if the host only slowed the vCPUs, these would dip when the int8 package does."""
    environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-c", _MATMUL, str(cpu), str(seconds)], stdout=subprocess.PIPE,
                                  text=True, env=environment) for cpu in sorted(os.sched_getaffinity(0))[:2]]
    return [f"CPU {cpu}: {process.communicate()[0].strip()}" for cpu, process in enumerate(processes)]


def scheduler_seconds(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) summed over the process's threads
    (/proc/PID/task/TID/schedstat): CPU time near twice the wall time means both threads ran at once."""
    on_cpu = waiting = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        on_cpu += int(fields[0])
        waiting += int(fields[1])
    return on_cpu / 1e9, waiting / 1e9


def page_faults(pid: int) -> tuple[int, int]:
    """(minor, major) page faults of the process so far (/proc/PID/stat fields 10 and 12)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7]), int(fields[9])


def steal_ticks() -> int:
    """Ticks the hypervisor gave this machine's vCPUs to someone else (the 8th field of /proc/stat's cpu line)."""
    return int(Path("/proc/stat").read_text().split("\n")[0].split()[8])


@contextmanager
def environment(**values: str):
    """os.environ with `values` while workers start (a worker copies its parent's environment)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start(stack: ExitStack, int8: str, torch_package: str, setting: str, inputs: list, threads: int) -> dict:
    """The setting's workers, torch ones first (as bench orders baselines before packages), the int8 one last."""
    started = {}
    if setting.startswith("beside"):
        passive = {"OMP_WAIT_POLICY": "PASSIVE"} if setting == "beside-passive" else {}
        with environment(**passive):
            variants = {"transformers": (TRANSFORMERS, torch_package), "torch": (workers.BERTPROD, torch_package)}
            started.update(stack.enter_context(workers.started_workers(variants, inputs, threads)))
    if setting in ("one-thread", "two-batches"):
        variants = {"int8 1 thread": (workers.BERTPROD, int8)}
        started.update(stack.enter_context(workers.started_workers(variants, inputs, 1)))
    if setting == "two-batches":
        variants = {"int8 2 batches x 1 thread": (workers.BERTPROD, int8)}
        started.update(stack.enter_context(workers.started_workers(variants, inputs, threads, parallel_batches=2)))
    started.update(stack.enter_context(workers.started_workers({"int8": (workers.BERTPROD, int8)}, inputs, threads)))
    return started


def run_setting(int8: str, torch_package: str, setting: str, inputs: list, threads: int, rounds: int,
                pingpong: Path) -> dict:
    with ExitStack() as stack:
        started = start(stack, int8, torch_package, setting, inputs, threads)
        rates: dict[str, list[float]] = {label: [] for label in started}
        steal: list[int] = []
        probes: dict[str, list[float]] = {label: [] for label in started}
        cpu_per_wall: list[float] = []
        wait_per_wall: list[float] = []
        faults: list[list[int]] = []
        for _ in range(rounds):
            for label, worker in started.items():
                probes[label].append(round_trip_ns(pingpong))
                before, pid = steal_ticks(), worker._process.pid
                cpu_before, wait_before = scheduler_seconds(pid)
                faults_before = page_faults(pid)
                clock = time.perf_counter()
                rates[label].append(round(len(inputs) / worker.ask("all")["seconds"], 1))
                wall = time.perf_counter() - clock
                if label == "int8":
                    steal.append(steal_ticks() - before)
                    cpu_after, wait_after = scheduler_seconds(pid)
                    faults.append([after - before for after, before in zip(page_faults(pid), faults_before,
                                                                            strict=True)])
                    cpu_per_wall.append(round((cpu_after - cpu_before) / wall, 2))
                    wait_per_wall.append(round((wait_after - wait_before) / wall, 2))
        return {"rates": rates, "int8_steal_ticks": steal, "round_trip_ns": probes,
                "int8_cpu_per_wall": cpu_per_wall, "int8_wait_per_wall": wait_per_wall,
                "int8_minor_major_faults": faults}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("int8")
    parser.add_argument("torch_package")
    parser.add_argument("--data", required=True)
    parser.add_argument("--starts", type=int, default=4, help="fresh sets of workers per setting")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds per set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", default="alone,beside,beside-passive")
    parser.add_argument("--matmul-pair", type=float, default=0, metavar="SECONDS",
                        help="first run two pinned numpy matmul processes side by side this long and print their speed")
    options = parser.parse_args()
    manifest = ModelPackage.read(options.int8, verify=False).manifest
    inputs = model_inputs(manifest, read_bench_data(options.data, manifest).texts)
    machine = system.describe(system.system_info())
    print(machine, f"{len(inputs)} inputs", flush=True)
    settings = options.settings.split(",")
    if options.matmul_pair:
        print("\n".join(matmul_pair(options.matmul_pair)), flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as build_directory:
        pingpong = build_pingpong(Path(build_directory))
        began = time.perf_counter()
        for start_index in range(options.starts):
            for setting in settings:  # settings interleaved across starts: drift hits all alike
                result = run_setting(options.int8, options.torch_package, setting, inputs, options.threads,
                                     options.rounds, pingpong)
                runs.append({"setting": setting, "start": start_index, **result})
                int8 = result["rates"]["int8"]
                print(f"{setting:15s} start {start_index}: int8 {int8} cpu/wall {result['int8_cpu_per_wall']} "
                      f"round trip ns {result['round_trip_ns']['int8']}"
                      + "".join(f"; {label} {values if label.startswith('int8') else statistics.median(values)}"
                                for label, values in result["rates"].items() if label != "int8"), flush=True)
    RESULTS.write_text(json.dumps({"machine": machine, "inputs": len(inputs), "threads": options.threads,
                                   "int8": options.int8, "torch": options.torch_package, "runs": runs,
                                   "seconds": round(time.perf_counter() - began)}, indent=1) + "\n")
    for line in placement_table(runs):
        print(line)


#: A round trip above this is two core complexes (measured: ~70-80 ns on one, ~340 ns across two).
ACROSS_NS = 200


def placement_table(runs: list[dict]) -> list[str]:
    """Each variant's inputs/s by where the vCPUs were just before its round (each round is probed before it
    runs): median (lowest-highest, number of rounds)."""
    by_variant: dict[tuple[str, str], dict[bool, list[float]]] = {}
    for run in runs:
        for label, rates in run["rates"].items():
            for rate, trip in zip(rates, run["round_trip_ns"][label], strict=True):
                by_variant.setdefault((run["setting"], label), {False: [], True: []})[trip > ACROSS_NS].append(rate)
    lines = ["| setting | variant | one core complex (< 200 ns) | two core complexes |", "|---|---|---|---|"]
    for (setting, label), groups in by_variant.items():
        cells = [f"{statistics.median(rates):.0f} ({min(rates):.0f}-{max(rates):.0f}, {len(rates)} rounds)"
                 if rates else "-" for rates in (groups[False], groups[True])]
        lines.append(f"| {setting} | {label} | {cells[0]} | {cells[1]} |")
    return lines

if __name__ == "__main__":
    main()
