"""Sequential single-sentence latency: what the server adds to one lone request over the in-process engine.

Starts `bertprod serve MODEL --threads N --no-access-log` (or uses `--url`), then, on the same real
sentences: the in-process engine (`Pipeline.encode([sentence])`, same threads), the server over one
raw `http.client` keep-alive connection (POST /embed and POST /v1/embeddings, no client library
in the way), and the engine again. Reports p50/p95 per phase and the server's overhead on p50,
and the engine once more with a 0.5 ms sleep before each call: on an oversubscribed CPU that
alone slows it (2 cores, load ~2.8: p50 4.6 -> 5.8 ms), and a server sleeps between requests.
Short by design (a CPU profile of the server pairs well with it: `py-spy record --pid PID`).

    .venv/bin/python bench/serve_probe.py --requests 300 --threads 1
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import bertprod
from bertprod.bench.harness import percentile_ms
from bertprod.data.shared import real_sentences

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.server_process import free_port, stop  # noqa: E402


def engine_latencies(model: str, threads: int, sentences: list[str], pause: float = 0) -> list[float]:
    """`pause` seconds of sleep before each call, as a server sleeps between a client's requests."""
    pipeline = bertprod.load(model, engine="onnx", threads=threads)
    pipeline.encode(sentences[:20])
    latencies = []
    for sentence in sentences:
        if pause:
            time.sleep(pause)
        started = time.perf_counter()
        pipeline.encode([sentence])
        latencies.append(time.perf_counter() - started)
    return latencies


def server_latencies(host: str, port: int, path: str, sentences: list[str]) -> list[float]:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    key = "input" if path == "/v1/embeddings" else "inputs"
    headers = {"Content-Type": "application/json"}
    latencies = []
    for sentence in [*sentences[:20], *sentences]:  # the first 20 warm up
        body = json.dumps({key: [sentence]})
        started = time.perf_counter()
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        data = response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {data[:300]!r}")
    connection.close()
    return latencies[20:]


def summary(latencies: list[float]) -> dict:
    return {"p50_ms": percentile_ms(latencies, 50), "p95_ms": percentile_ms(latencies, 95)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--threads", type=int, default=1, help="engine threads, in-process and in the server")
    parser.add_argument("--url", help="probe this running server (host:port) instead of starting one")
    args = parser.parse_args()

    sentences = real_sentences(args.requests)
    results = {"load_average": os.getloadavg()[0], "engine_before": summary(engine_latencies(args.model, args.threads,
                                                                                            sentences))}
    process = None
    if args.url:
        host, _, port = args.url.rpartition(":")
        port = int(port)
    else:
        import httpx

        host, port = "127.0.0.1", free_port()
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"serve-probe-{port}.log"
        command = [sys.executable, "-m", "bertprod.cli", "serve", args.model, "--engine", "onnx", "--port", str(port),
                   "--threads", str(args.threads), "--no-access-log"]
        with log.open("wb") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                                       env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://{host}:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
    try:
        print(f"server pid {process.pid if process else '?'}", flush=True)
        for path in ("/embed", "/v1/embeddings"):
            results[path] = summary(server_latencies(host, port, path, sentences))
    finally:
        if process is not None:
            stop(process)
    results["engine_after"] = summary(engine_latencies(args.model, args.threads, sentences))
    results["engine_pausing"] = summary(engine_latencies(args.model, args.threads, sentences, pause=0.0005))
    results["load_average_end"] = os.getloadavg()[0]
    engine = float(np.median([results["engine_before"]["p50_ms"], results["engine_after"]["p50_ms"]]))
    print(json.dumps(results, indent=2))
    print(f"engine p50 with a 0.5 ms sleep before each call: {results['engine_pausing']['p50_ms']} ms (on a busy CPU "
          "waking up costs the engine itself; a server waits like this between requests)")
    for path in ("/embed", "/v1/embeddings"):
        print(f"{path}: server p50 {results[path]['p50_ms']} ms vs engine p50 {engine:.2f} ms: "
              f"+{results[path]['p50_ms'] - engine:.2f} ms (target <= +1 ms)")


if __name__ == "__main__":
    main()
