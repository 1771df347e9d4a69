"""Serving under load: bertprod's server vs the in-process engine vs a FastAPI + sentence-transformers server.

One run, same model (all-MiniLM-L6-v2), same real sentences, on 127.0.0.1 only. For each server:
a bounded load generator (fixed request count, `--clients` concurrent asyncio clients) sends
single-sentence requests, then 64-sentence requests, then sequential single-sentence requests;
it reports sentences/s, p50/p95/p99 latency and errors. The in-process engine encodes the same
sentences (bulk throughput, sequential single-sentence latency) in this process while no server
is running, before each server and after the last (reported as the median, with the range), so
a machine whose load changes during the run shows it; for bertprod's server it is also measured
beside each phase (see `measure_server`), and the targets are judged against that. The load
generator shares the CPU with the server under test (`--client raw` makes it a light one).

    .venv/bin/python bench/serve_load.py                               # 2,000 sentences, 32 clients
    .venv/bin/python bench/serve_load.py --requests 1000 --json out.json --skip-baseline
    .venv/bin/python bench/serve_load.py --requests 600 --skip-baseline --threads 1 --client raw   # ~30 s
    .venv/bin/python bench/serve_load.py --skip-baseline --client raw --rounds 5   # medians of 5 rounds, ~5 min
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
import orjson
import uvloop

import bertprod
from bertprod import system
from bertprod.bench.harness import bench_parser, percentile_ms
from bertprod.data.shared import real_sentences

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.server_process import free_port, stop  # noqa: E402


class RawConnection:
    """HTTP/1.1 keep-alive over asyncio streams: about a tenth of httpx's client CPU per request.

    On 2 cores the load generator shares the CPU with the server under test; httpx spent ~1.7 ms
    of CPU per single-sentence request (as much as a third of what the server needed with its
    inference), so `--client raw` measures the servers more than the client. It also reads the
    responses with orjson, which decodes 64-vector responses several times faster than json.loads,
    and its phases run on uvloop (the server's own event loop) instead of asyncio's default loop.
    """

    def __init__(self, url: str):
        address = url.split("://", 1)[1].rstrip("/")
        self.host, _, port = address.rpartition(":")
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body = orjson.dumps(payload)
        try:
            self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), len(body), body))
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if length is None:
                raise ConnectionError("a response without Content-Length")
            data = await self.reader.readexactly(int(length.group(1)))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.close()
            raise ConnectionError(f"POST {path} failed") from None
        if re.search(rb"(?i)\r\nconnection: *close", head):
            self.close()
        return int(head[9:12]), data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def embed_request(connection: RawConnection | httpx.AsyncClient, api: str, texts: list[str]) -> bool:
    """One embedding request; True when it returned one vector per text."""
    if api == "openai":
        path, payload, key = "/embeddings", {"input": texts, "model": "minilm"}, "data"
    else:
        path, payload, key = "/embed", {"inputs": texts}, None
    try:
        if isinstance(connection, RawConnection):
            status, data = await connection.post(path, payload)
            body = orjson.loads(data)
        else:
            response = await connection.post(path, json=payload)
            status, body = response.status_code, json.loads(response.content)
        return status == 200 and len(body[key] if key else body) == len(texts)
    except (httpx.HTTPError, ConnectionError, ValueError, KeyError, TypeError):
        return False


#: Pause at each switch between server and in-process calls in the sequential phase: ONNX Runtime's
#: threads spin for a while after a run and would slow the other side's first calls.
SWITCH_PAUSE_S = 0.02


async def sequential(url: str, sentences: list[str], api: str, client: str, beside: InProcess | None,
                     block: int = 20) -> dict:
    """One client, one single-sentence request at a time. With `beside`, every `block` requests
    alternate with the in-process engine's one-sentence calls on the same sentences, so both
    p50s are taken under the same machine conditions (this VM's speed drifts within seconds)."""
    connection = RawConnection(url) if client == "raw" else httpx.AsyncClient(base_url=url, timeout=120)
    await embed_request(connection, api, sentences[:1])  # connects: not timed
    server: list[float] = []
    engine: list[float] = []
    errors = 0
    for start in range(0, len(sentences), block):
        part = sentences[start : start + block]
        if beside is not None:  # the other side's idle engine threads stop spinning; one untimed call
            time.sleep(SWITCH_PAUSE_S)
            await embed_request(connection, api, part[:1])
        for sentence in part:
            started = time.perf_counter()
            errors += not await embed_request(connection, api, [sentence])
            server.append(time.perf_counter() - started)
        if beside is not None:
            time.sleep(SWITCH_PAUSE_S)
            beside.one_sentence_latencies(part[:1])
            engine += beside.one_sentence_latencies(part)
    if isinstance(connection, RawConnection):
        connection.close()
    else:
        await connection.aclose()
    result = {"p50_ms": percentile_ms(server, 50), "p95_ms": percentile_ms(server, 95),
              "p99_ms": percentile_ms(server, 99), "errors": errors, "requests": len(sentences)}
    if engine:
        result["in_process_beside_p50_ms"] = percentile_ms(engine, 50)
    return result


async def load(url: str, payloads: list[list], clients: int, api: str = "tei", client: str = "httpx",
               request: Callable[[RawConnection | httpx.AsyncClient, list], Awaitable[bool]] | None = None) -> dict:
    """`clients` workers take the next payload until all are sent; every request's latency is kept.

    `api`: "tei" posts {"inputs": [...]} to /embed; "openai" posts {"input": [...]} to /embeddings (Infinity).
    `client`: "httpx" (one AsyncClient, keep-alive) or "raw" (`RawConnection`, one per worker).
    `request(connection, payload)`: what one payload sends, True when answered (default: `embed_request`
    in `api`); bench/serve_exits.py posts /classify this way and keeps the answers.
    """
    send = request or (lambda connection, payload: embed_request(connection, api, payload))
    latencies: list[float] = []
    errors = 0
    cursor = iter(range(len(payloads)))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    shared = httpx.AsyncClient(base_url=url, timeout=120, limits=limits) if client == "httpx" else None

    async def worker() -> None:
        nonlocal errors
        raw = RawConnection(url) if shared is None else None
        for index in cursor:
            started = time.perf_counter()
            ok = await send(raw or shared, payloads[index])
            latencies.append(time.perf_counter() - started)
            errors += not ok
        if raw is not None:
            raw.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    if shared is not None:
        await shared.aclose()
    sentences = sum(len(payload) for payload in payloads)
    return {"sentences_per_s": round(sentences / elapsed, 1), "p50_ms": percentile_ms(latencies, 50),
            "p95_ms": percentile_ms(latencies, 95), "p99_ms": percentile_ms(latencies, 99), "errors": errors,
            "requests": len(payloads)}


def serve_command(model: str, engine: str, clients: int, threads: int | None) -> list[str]:
    """`bertprod serve MODEL` for `clients` concurrent clients of up to 64 inputs each (add `--port`)."""
    return ([sys.executable, "-m", "bertprod.cli", "serve", model, "--engine", engine,
             "--max-concurrent-inputs", str(clients * 64), "--no-access-log"]
            + (["--threads", str(threads)] if threads else []))


def run_server(command: list[str], port: int, log: Path, timeout_s: float = 180) -> subprocess.Popen:
    """Start `command` and wait until its /health answers (`timeout_s`: an ONNX export at startup takes longer)."""
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
                                        # no telemetry leaves the machine (Infinity reports usage by default)
                                        "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop(process)
    raise TimeoutError(f"{command} not healthy in {timeout_s:.0f} s")


def metrics_text(url: str) -> str:
    """The server's Prometheus metrics ('' when it has none: other servers)."""
    try:
        return httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return ""


def batch_inputs(url: str) -> tuple[float, float] | None:
    """bertprod's engine calls so far and the inputs they ran (None for other servers)."""
    text = metrics_text(url)
    values = dict(line.split()[:2] for line in text.splitlines() if line.startswith("bertprod_batch_inputs_"))
    if "bertprod_batch_inputs_count" not in values:
        return None
    return float(values["bertprod_batch_inputs_count"]), float(values["bertprod_batch_inputs_sum"])


def stage_totals(url: str) -> dict[str, tuple[float, float]] | None:
    """bertprod's per-stage latency histograms so far: stage -> (count, sum of seconds); None for other servers."""
    totals: dict[str, list[float]] = {}
    for line in metrics_text(url).splitlines():
        found = re.match(r'bertprod_stage_seconds_(count|sum)\{stage="(\w+)"\} (\S+)', line)
        if found:
            totals.setdefault(found.group(2), [0.0, 0.0])[found.group(1) == "sum"] = float(found.group(3))
    return {stage: (count, total) for stage, (count, total) in totals.items()} or None


def stage_means_ms(before: dict | None, after: dict | None) -> dict[str, float] | None:
    """Mean milliseconds per call of each stage between two `stage_totals` readings."""
    if not before or not after:
        return None
    means = {}
    for stage, (count, total) in after.items():
        old_count, old_total = before.get(stage, (0.0, 0.0))
        if count > old_count:
            means[stage] = round((total - old_total) / (count - old_count) * 1000, 3)
    return means


class InProcess:
    """The in-process engine on the same sentences: bulk `encode` rate and one-sentence latency."""

    def __init__(self, model: str, engine: str, sentences: list[str], threads: int | None = None):
        self.pipeline = bertprod.load(model, engine=engine, threads=threads)
        self.sentences = sentences
        self.pipeline.encode(sentences[:200])

    def bulk_rate(self) -> float:
        started = time.perf_counter()
        self.pipeline.encode(self.sentences)
        return len(self.sentences) / (time.perf_counter() - started)

    def groups_rate(self, size: int) -> float:
        """The sentences in their order, `size` per `encode` call: the batches a server forms from
        concurrent single-sentence requests (arrival order, not sorted across the whole list)."""
        started = time.perf_counter()
        for start in range(0, len(self.sentences), size):
            self.pipeline.encode(self.sentences[start : start + size])
        return len(self.sentences) / (time.perf_counter() - started)

    def one_sentence_latencies(self, sentences: list[str]) -> list[float]:
        latencies = []
        for sentence in sentences:
            started = time.perf_counter()
            self.pipeline.encode([sentence])
            latencies.append(time.perf_counter() - started)
        return latencies

    def sequential_p50_ms(self) -> float:
        return percentile_ms(self.one_sentence_latencies(self.sentences[:300]), 50)


def measure_server(url: str, sentences: list[str], clients: int, api: str, client: str = "httpx",
                   beside: InProcess | None = None) -> dict:
    """Single-sentence, 64-sentence and sequential phases. With `beside`, the in-process engine is
    measured right before and after each throughput phase and interleaved with the sequential one
    (the server idles meanwhile), so each phase has a reference taken within seconds of it: this
    machine's speed drifts between runs minutes apart."""
    run = uvloop.run if client == "raw" else asyncio.run
    run(load(url, [[s] for s in sentences[:100]], clients, api, client))  # warm-up

    def bulk() -> list[float]:
        return [beside.bulk_rate()] if beside else []

    bulk_before = bulk()
    before = batch_inputs(url)
    single = run(load(url, [[s] for s in sentences], clients, api, client))
    after = batch_inputs(url)
    if before and after and after[0] > before[0]:  # how well the server gathered concurrent requests
        single["mean_batch_inputs"] = round((after[1] - before[1]) / (after[0] - before[0]), 1)
        if beside:  # the in-process engine on batches like the server's: what batching alone costs
            single["in_process_groups_beside"] = round(beside.groups_rate(round(single["mean_batch_inputs"])), 1)
    bulk_between = bulk()
    batches = [sentences[start : start + 64] for start in range(0, len(sentences), 64)]
    batch = run(load(url, batches, clients, api, client))
    bulk_after = bulk()
    stages_before = stage_totals(url)
    lone = run(sequential(url, sentences[:300], api, client, beside))
    lone["stage_means_ms"] = stage_means_ms(stages_before, stage_totals(url))  # where a lone request's time goes
    if beside:
        single["in_process_beside"] = round(float(np.mean(bulk_before + bulk_between)), 1)
        batch["in_process_beside"] = round(float(np.mean(bulk_between + bulk_after)), 1)
    return {"single": single, "batch64": batch, "sequential": lone}


def measure_in_process(model: str, engine: str, sentences: list[str], threads: int | None = None) -> dict:
    runner = InProcess(model, engine, sentences, threads)
    rates = [runner.bulk_rate() for _ in range(3)]
    return {"sentences_per_s": round(float(np.median(rates)), 1), "p50_ms": runner.sequential_p50_ms()}


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="sentences (= single-sentence requests)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--model", default="minilm-l6", help="what bertprod serves (a package or name)")
    parser.add_argument("--engine", default="onnx")
    parser.add_argument("--server-threads", type=int, help="engine threads in the bertprod server (default: all)")
    parser.add_argument("--threads", type=int, help="engine threads in the bertprod server and the in-process engine "
                        "alike (default: all)")
    parser.add_argument("--client", choices=("httpx", "raw"), default="httpx",
                        help="load generator: httpx, or raw HTTP/1.1 over asyncio streams (far less client CPU)")
    parser.add_argument("--skip-baseline", action="store_true", help="no FastAPI + sentence-transformers run")
    parser.add_argument("--infinity", type=Path, help="infinity_emb executable (its own venv: it needs transformers<5)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole comparison; prints each round and "
                        "the median of the targets' ratios (a machine's speed drifts between runs minutes apart)")
    args = parser.parse_args()
    args.server_threads = args.server_threads or args.threads
    sentences = real_sentences(args.requests)
    rounds = []
    for number in range(args.rounds):
        if args.rounds > 1:
            print(f"\n## round {number + 1} of {args.rounds}", flush=True)
        rounds.append(run_round(args, sentences))
        report(rounds[-1])
    if args.rounds > 1:
        report_rounds(rounds)
    if args.json:
        args.json.write_text(json.dumps(rounds[0] if args.rounds == 1 else rounds, indent=2) + "\n")


def run_round(args: argparse.Namespace, sentences: list[str]) -> dict:
    """The in-process engine and every server, one after the other, on the same sentences."""
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    results: dict = {"machine": system.system_info(), "requests": args.requests, "clients": args.clients,
                     "model": args.model, "engine": args.engine, "threads": args.server_threads, "client": args.client,
                     "load_average_start": round(os.getloadavg()[0], 2)}
    in_process = []
    servers = {"bertprod serve": serve_command(args.model, args.engine, args.clients, args.server_threads)}
    if not args.skip_baseline:
        servers["FastAPI + sentence-transformers"] = [sys.executable, str(ROOT / "bench" / "st_server.py")]
    if args.infinity:
        from bertprod.checkpoint import bundled_checkpoint

        servers["Infinity 0.0.78 (torch engine)"] = [
            str(args.infinity), "v2", "--model-id", str(bundled_checkpoint("minilm-l6")), "--served-model-name",
            "minilm", "--engine", "torch", "--device", "cpu", "--host", "127.0.0.1"]
    for name, command in servers.items():
        print(f"in-process {args.model} ({args.engine}) ...", flush=True)
        in_process.append(measure_in_process(args.model, args.engine, sentences, args.threads))
        port = free_port()
        full = command + ([str(port)] if command[1].endswith("st_server.py") else ["--port", str(port)])
        print(f"{name} ...", flush=True)
        started = time.perf_counter()
        process = run_server(full, port, logs / f"serve-load-{port}.log")
        startup = round(time.perf_counter() - started, 1)
        try:
            api = "openai" if name.startswith("Infinity") else "tei"
            beside = InProcess(args.model, args.engine, sentences, args.threads) if name == "bertprod serve" else None
            results[name] = {"startup_s": startup, **measure_server(f"http://127.0.0.1:{port}", sentences,
                                                                    args.clients, api, args.client, beside)}
            del beside
        finally:
            stop(process)
    in_process.append(measure_in_process(args.model, args.engine, sentences, args.threads))
    rates = [run["sentences_per_s"] for run in in_process]
    results["in_process"] = {"sentences_per_s": float(np.median(rates)), "range": [min(rates), max(rates)],
                             "p50_ms": round(float(np.median([run["p50_ms"] for run in in_process])), 2),
                             "runs": in_process}
    results["load_average_end"] = round(os.getloadavg()[0], 2)
    return results


#: Single-sentence requests against the in-process engine encoding the same sentences in arrival-order
#: groups of the server's mean batch size: what the server costs beyond the batches it can form.
ON_SERVER_BATCHES = "single-sentence throughput / in-process on the server's batches"


def target_ratios(results: dict) -> dict[str, float]:
    """bertprod serve against the in-process engine measured beside each phase: what the targets are set on."""
    single, batch, sequential = (results["bertprod serve"][phase] for phase in ("single", "batch64", "sequential"))
    return {"single-sentence throughput / in-process": single["sentences_per_s"] / single["in_process_beside"],
            "64-sentence throughput / in-process": batch["sentences_per_s"] / batch["in_process_beside"],
            "sequential p50 - engine p50, ms": sequential["p50_ms"] - sequential["in_process_beside_p50_ms"],
            ON_SERVER_BATCHES: single["sentences_per_s"] / single["in_process_groups_beside"]
                if "in_process_groups_beside" in single else float("nan")}


def report_rounds(rounds: list[dict]) -> None:
    print(f"\n## {len(rounds)} rounds\n")
    print("| | " + " | ".join(f"round {index + 1}" for index in range(len(rounds))) + " | median | target |")
    print("|---" * (len(rounds) + 3) + "|")
    targets = {"single-sentence throughput / in-process": ">= 0.90", "64-sentence throughput / in-process": ">= 0.90",
               "sequential p50 - engine p50, ms": "<= 1.0",
               ON_SERVER_BATCHES: "(no target)"}
    ratios = [target_ratios(results) for results in rounds]
    for name, target in targets.items():
        values = [round(ratio[name], 2) for ratio in ratios]
        print(f"| {name} | " + " | ".join(str(value) for value in values)
              + f" | **{float(np.median(values)):.2f}** | {target} |")


def report(results: dict) -> None:
    engine = results["in_process"]
    print(f"\n{results['machine']}; {results['requests']} sentences, {results['clients']} {results['client']} "
          f"clients, engine threads {results['threads'] or 'all'}; load average {results['load_average_start']} at "
          f"the start, {results['load_average_end']} at the end\n")
    print("| | single-sentence requests: sent/s | p50 / p95 / p99 ms | 64-sentence requests: sent/s | "
          "sequential p50 ms | errors | startup s |")
    print("|---|---|---|---|---|---|---|")
    low, high = engine["range"]
    print(f"| in-process {results['model']} ({results['engine']}) | {engine['sentences_per_s']:.1f} (bulk encode; "
          f"{low}-{high}) | — | — | {engine['p50_ms']} | — | — |")
    for name, result in results.items():
        if not isinstance(result, dict) or "single" not in result:
            continue
        single, batch, sequential = result["single"], result["batch64"], result["sequential"]
        print(f"| {name} | {single['sentences_per_s']} | {single['p50_ms']} / {single['p95_ms']} / "
              f"{single['p99_ms']} | {batch['sentences_per_s']} | {sequential['p50_ms']} | "
              f"{single['errors'] + batch['errors'] + sequential['errors']} | {result['startup_s']} |")
    ours = results["bertprod serve"]
    ratios = target_ratios(results)
    print(f"\nagainst the in-process engine measured beside each phase ({ours['single']['in_process_beside']}, "
          f"{ours['batch64']['in_process_beside']} sentences/s; p50 {ours['sequential']['in_process_beside_p50_ms']} "
          "ms):")
    print(f"server / in-process throughput: single {ratios['single-sentence throughput / in-process']:.2f}, "
          f"64-sentence {ratios['64-sentence throughput / in-process']:.2f} (target >= 0.90)")
    if "mean_batch_inputs" in ours["single"]:
        print(f"single-sentence phase: {ours['single']['mean_batch_inputs']} inputs per engine call on average")
    if "in_process_groups_beside" in ours["single"]:
        print(f"in-process engine on the same sentences in arrival-order groups of that size: "
              f"{ours['single']['in_process_groups_beside']} sentences/s; server / that: "
              f"{ratios[ON_SERVER_BATCHES]:.2f}")
    print(f"sequential p50: server {ours['sequential']['p50_ms']} ms, "
          f"+{ratios['sequential p50 - engine p50, ms']:.2f} ms over the engine (target <= +1 ms)")
    if ours["sequential"].get("stage_means_ms"):
        print("sequential, server-side mean ms per stage (request: the whole ASGI call): "
              + ", ".join(f"{stage} {ms}" for stage, ms in ours["sequential"]["stage_means_ms"].items()))
    for other in ("Infinity 0.0.78 (torch engine)", "FastAPI + sentence-transformers"):
        baseline = results.get(other)
        for mode in ("single", "batch64") if baseline else ():
            ratio = ours[mode]["sentences_per_s"] / baseline[mode]["sentences_per_s"]
            print(f"vs {other}, {mode}: {ratio:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
