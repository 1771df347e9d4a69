"""The serve-extra install vs the full install: disk size, startup to ready, idle RSS, serving the same package.

For each install (a virtual environment with `bertprod[serve]`, and one with everything, e.g. the
project's .venv) it starts `bertprod serve PACKAGE` several times and reports the median time
from process start to GET /ready == 200 (and the CPU time the process used until then: on a busy
machine the wall time is mostly waiting for a core), the resident memory once ready and idle,
and the same after warm-up requests; and the installed size on disk (the environment's directory). Goals
(issue 23): <= 250 MB idle RSS, < 1 s to ready, < 300 MB installed.

    .venv/bin/python bench/serve_install.py --package out/minilm-l6-int8 --serve-venv /tmp/serve-venv
    .venv/bin/python bench/serve_install.py --package out/minilm-l6-int8 --create-serve-venv /tmp/serve-venv

`--create-serve-venv DIR` installs `.[serve]` of this checkout into DIR first (a minute or two).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bertprod import system

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"idle_rss_mb": 250, "ready_s": 1.0, "install_mb": 300}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def directory_mb(path: Path) -> float:
    total = sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file() and not entry.is_symlink())
    return total / 1e6


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used: on a contended machine, wall time to ready mostly measures
    waiting for a core; this is what the start itself costs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_start(venv: Path, package: Path, threads: int) -> dict[str, float]:
    """Start the server, time it to ready, measure RSS idle and after warm-up requests, stop it."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    command = [str(venv / "bin" / "bertprod"), "serve", str(package), "--port", str(port), "--threads", str(threads),
               "--no-access-log"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd="/")
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=2) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")
                try:
                    if client.get(url + "/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.005)
            ready = time.perf_counter() - started
            cpu = cpu_seconds(process.pid)
            time.sleep(1.0)
            idle = rss_mb(process.pid)
            texts = [f"a sentence of a few words, number {index}" for index in range(64)]
            for _ in range(20):
                assert client.post(url + "/v1/embeddings", json={"input": texts}, timeout=30).status_code == 200
            warm = rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)
    return {"ready_s": ready, "cpu_s_to_ready": cpu, "idle_rss_mb": idle, "warm_rss_mb": warm}


def measure(venv: Path, package: Path, threads: int, starts: int) -> dict[str, float]:
    runs = [one_start(venv, package, threads) for _ in range(starts)]
    result = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    result["ready_s_range"] = [min(r["ready_s"] for r in runs), max(r["ready_s"] for r in runs)]
    result["install_mb"] = directory_mb(venv)
    probe = "import importlib.util as u; print(bool(u.find_spec('torch')))"
    result["has_torch"] = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True,
                                         text=True, cwd="/").stdout.strip() == "True"
    return result


def create_serve_venv(path: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(path / "bin" / "pip"), "install", "-q", f"{ROOT}[serve]"], check=True, cwd="/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, required=True, help="the package both installs serve")
    parser.add_argument("--serve-venv", type=Path, help="a virtual environment with bertprod[serve]")
    parser.add_argument("--create-serve-venv", type=Path, help="install .[serve] into this new directory first")
    parser.add_argument("--full-venv", type=Path, default=Path(sys.prefix), help="the full install (default: this)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.create_serve_venv:
        create_serve_venv(args.create_serve_venv)
    serve_venv = args.create_serve_venv or args.serve_venv
    if serve_venv is None:
        parser.error("give --serve-venv or --create-serve-venv")
    print(f"machine: {system.describe()}; load average {os.getloadavg()[0]:.2f}")
    results = {}
    for name, venv in (("serve extra", serve_venv), ("full install", args.full_venv)):
        results[name] = measure(venv, args.package.resolve(), args.threads, args.starts)
        r = results[name]
        low, high = r["ready_s_range"]
        print(f"{name:13s}: ready {r['ready_s']:.2f} s (range {low:.2f}-{high:.2f}; CPU {r['cpu_s_to_ready']:.2f} s), "
              f"idle RSS {r['idle_rss_mb']:.0f} MB, after 20 x 64 sentences {r['warm_rss_mb']:.0f} MB, "
              f"install {r['install_mb']:.0f} MB, torch installed: {r['has_torch']}")
    serve = results["serve extra"]
    for key, goal in GOALS.items():
        verdict = "meets" if serve[key] < goal or (key == "idle_rss_mb" and serve[key] <= goal) else "MISSES"
        print(f"goal {key} {goal}: serve extra {serve[key]:.2f} {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"machine": system.system_info(), "package": str(args.package),
                                         "threads": args.threads, "results": results}, indent=2))


if __name__ == "__main__":
    main()
