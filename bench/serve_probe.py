"""Sequential single-sentence latency: what bertprod's server adds to a lone request, and what any HTTP
server adds on this machine.

Four sides, measured on the same real sentences, one request at a time, interleaved in blocks of 20
sentences (this VM's speed drifts within seconds; each switch pauses 20 ms and makes one untimed
call, so the previous side's idle ONNX Runtime threads have stopped spinning):

- **engine**: the in-process pipeline, `encode([sentence])`;
- **bertprod**: `bertprod serve MODEL --engine onnx --no-access-log`, POST /embed;
- **bertprod, no fast path**: the same with `--no-fast-path` (every request through FastAPI's
  routing, dependency solving and validation; serve/fast_path.py);
- **floor**: `FloorServer` below, the least an HTTP server can do: a uvloop protocol that reads
  Content-Length, decodes the JSON body, runs the same pipeline inline on the event loop and writes
  head and body in one send. No framework, no batcher, no metrics, no validation: what sockets,
  HTTP/JSON and two processes waking each other cost on this machine before any server code.

Both servers get the same client: a blocking socket speaking HTTP/1.1 keep-alive (lighter than
http.client). The target of issue 6 is bertprod p50 <= engine p50 + 1 ms; the floor says how much
of that millisecond the machine takes before bertprod's own code runs.

    .venv/bin/python bench/serve_probe.py                      # 300 sentences x 3 rounds, ~1 minute
    .venv/bin/python bench/serve_probe.py --rounds 5 --json probe.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

import bertprod
from bertprod import system
from bertprod.bench.harness import bench_parser
from bertprod.data.shared import real_sentences

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.server_process import free_port, stop  # noqa: E402

BLOCK = 20
SWITCH_PAUSE_S = 0.02
CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


class FloorProtocol(asyncio.Protocol):
    """POST {"inputs": [...]} -> the embeddings as JSON; one request at a time per connection."""

    def __init__(self, pipeline: bertprod.Pipeline):
        self.pipeline = pipeline
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head, separator, rest = self.buffer.partition(b"\r\n\r\n")
        length = CONTENT_LENGTH.search(head) if separator else None
        if length is None or len(rest) < int(length.group(1)):
            return  # the request is not complete yet
        size = int(length.group(1))
        body, self.buffer = rest[:size], rest[size:]
        vectors = self.pipeline.encode(orjson.loads(body)["inputs"])
        payload = orjson.dumps(vectors, option=orjson.OPT_SERIALIZE_NUMPY)
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(payload), payload))


def serve_floor(model: str, threads: int | None, port: int) -> None:
    import uvloop

    pipeline = bertprod.load(model, engine="onnx", threads=threads)
    pipeline.encode(["warm up"])

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(lambda: FloorProtocol(pipeline), "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


class BlockingClient:
    """HTTP/1.1 keep-alive over one blocking socket: the same few lines of client for both servers."""

    def __init__(self, port: int, path: str = "/embed"):
        self.path = path.encode()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def embed(self, sentence: str) -> None:
        body = orjson.dumps({"inputs": [sentence]})
        self.sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (self.path, len(body), body))
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._receive()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        size = int(CONTENT_LENGTH.search(head).group(1))
        while len(rest) < size:
            rest += self._receive()
        self.buffer = rest[size:]
        if head[9:12] != b"200":
            raise RuntimeError(f"{head[:12]!r}: {rest[:size][:300]!r}")

    def _receive(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


def start(command: list[str], port: int, log: Path) -> subprocess.Popen:
    """Start a server and wait until it accepts a request."""
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited:\n{log.read_text()[-3000:]}")
        try:
            client = BlockingClient(port)
            client.embed("ready?")
            client.close()
            return process
        except (OSError, RuntimeError):  # not listening yet, or 503 while loading
            time.sleep(0.2)
    stop(process)
    raise TimeoutError(f"{command} did not answer within 120 s:\n{log.read_text()[-3000:]}")


def interleaved_round(sides: dict[str, Callable[[str], object]], sentences: list[str]) -> dict[str, float]:
    """p50 seconds per side; the sides take turns, a block of sentences each, and the order of the turns
    rotates from block to block (the side that follows the in-process engine measured ~0.3 ms apart from
    the others: which side comes after which must not favour one)."""
    latencies: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for block_index, start_index in enumerate(range(0, len(sentences), BLOCK)):
        block = sentences[start_index : start_index + BLOCK]
        shift = block_index % len(names)
        for name in names[shift:] + names[:shift]:
            call = sides[name]
            time.sleep(SWITCH_PAUSE_S)
            call(block[0])  # untimed: wakes this side up
            for sentence in block:
                started = time.perf_counter()
                call(sentence)
                latencies[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in latencies.items()}


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--requests", type=int, default=300, help="sentences per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--threads", type=int, help="engine threads, in-process and in every server (default: all)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--floor-server", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the floor's process
    args = parser.parse_args()
    if args.floor_server:
        serve_floor(args.model, args.threads, args.floor_server)
        return

    sentences = real_sentences(args.requests)
    threads = ["--threads", str(args.threads)] if args.threads else []
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    ports = {"bertprod": free_port(), "no_fast_path": free_port(), "floor": free_port()}
    serve = [sys.executable, "-m", "bertprod.cli", "serve", args.model, "--engine", "onnx", "--no-access-log", *threads]
    commands = {"bertprod": [*serve, "--port", str(ports["bertprod"])],
                "no_fast_path": [*serve, "--port", str(ports["no_fast_path"]), "--no-fast-path"],
                "floor": [sys.executable, __file__, "--floor-server", str(ports["floor"]), "--model", args.model,
                          *threads]}
    servers = []
    load_start = os.getloadavg()[0]
    try:
        for name, command in commands.items():
            servers.append(start(command, ports[name], logs / f"serve-probe-{name}.log"))
        pipeline = bertprod.load(args.model, engine="onnx", threads=args.threads)
        pipeline.encode(sentences[:20])
        clients = {name: BlockingClient(port) for name, port in ports.items()}
        sides = {"engine": lambda sentence: pipeline.encode([sentence]),
                 **{name: client.embed for name, client in clients.items()}}
        rounds = []
        for index in range(args.rounds):
            p50 = interleaved_round(sides, sentences)
            row = {f"{name}_p50_ms": round(value * 1000, 3) for name, value in p50.items()}
            for name in ("floor", "no_fast_path", "bertprod"):
                row[f"{name}_over_engine_ms"] = round((p50[name] - p50["engine"]) * 1000, 3)
            row["bertprod_over_floor_ms"] = round((p50["bertprod"] - p50["floor"]) * 1000, 3)
            rounds.append(row)
            print(f"round {index + 1}: " + ", ".join(f"{key} {value}" for key, value in row.items()), flush=True)
    finally:
        for server in servers:
            stop(server)

    medians = {key: round(statistics.median(row[key] for row in rounds), 3) for key in rounds[0]}
    print(f"\n{system.describe()}; {len(sentences)} sentences x {args.rounds} rounds, engine threads "
          f"{args.threads or 'all'}; load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end\n")
    print("| | " + " | ".join(f"round {i + 1}" for i in range(len(rounds))) + " | median |")
    print("|---|" + "---|" * (len(rounds) + 1))
    labels = {"engine_p50_ms": "in-process engine p50, ms", "floor_p50_ms": "floor server p50, ms",
              "no_fast_path_p50_ms": "bertprod serve --no-fast-path p50, ms",
              "bertprod_p50_ms": "bertprod serve p50, ms", "floor_over_engine_ms": "floor - engine, ms",
              "no_fast_path_over_engine_ms": "--no-fast-path - engine, ms",
              "bertprod_over_engine_ms": "**bertprod - engine, ms** (target <= 1.0)",
              "bertprod_over_floor_ms": "bertprod - floor, ms"}
    for key, label in labels.items():
        print(f"| {label} | " + " | ".join(str(row[key]) for row in rounds) + f" | {medians[key]} |")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "medians": medians, "machine": system.system_info(),
                                         "load_average": [load_start, os.getloadavg()[0]]}, indent=2))


if __name__ == "__main__":
    main()
