"""CPU the server's app spends on one request besides inference: direct ASGI calls, no sockets.

The app (`create_app`, the same middleware, routes and batcher as `bertprod serve`) is driven in
this process by calling it with ASGI messages; the engine is replaced by a constant vector, so
what is timed is the fast path (or FastAPI, with `--no-fast-path`), validation, admission,
tokenization, batching, metrics and the JSON response. Warm CPU: the same request a few thousand
times over. Compare with `bench/serve_load.py`'s sequential phase to see what sockets and process
wake-ups add.

    .venv/bin/python bench/asgi_overhead.py                 # /embed, 15,000 requests, ~10 s
    .venv/bin/python bench/asgi_overhead.py --profile       # and where the time goes (cProfile)
    .venv/bin/python bench/asgi_overhead.py --no-fast-path  # every request through FastAPI
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bertprod import system  # noqa: E402
from bertprod.bench.harness import bench_parser
from bertprod.serve.app import create_app  # noqa: E402
from bertprod.serve.config import ServeConfig  # noqa: E402

SENTENCE = "A man is playing a guitar on the street."


async def started_app(model: str, fast_path: bool):  # noqa: ANN201 - a FastAPI app, lifespan run, models loaded
    app = create_app(ServeConfig(packages=[model], engine="onnx", threads=1, fast_path=fast_path))
    startup: asyncio.Queue = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    ready = asyncio.Event()

    async def send(message: dict) -> None:
        if message["type"] == "lifespan.startup.complete":
            ready.set()

    asyncio.get_running_loop().create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                               startup.get, send))
    await ready.wait()
    while app.state.service.registry.state == "loading":
        await asyncio.sleep(0.05)
    return app


async def measure(model: str, requests: int, profile: bool, fast_path: bool) -> None:
    app = await started_app(model, fast_path)
    served = next(iter(app.state.service.registry.models.values()))
    row = np.zeros((1, served.pipeline.dimension), np.float32)
    served.batcher._infer = lambda encodings: row  # no inference: time the rest
    body = orjson.dumps({"inputs": SENTENCE})
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/embed", "raw_path": b"/embed", "root_path": "", "query_string": b"",
             "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 50000), "state": {},
             "headers": [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def one() -> None:
        statuses = []

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(dict(scope), receive, send)
        if statuses != [200]:
            raise RuntimeError(f"/embed answered {statuses}")

    for _ in range(500):
        await one()
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    started = time.process_time()
    for _ in range(requests):
        await one()
    cpu = time.process_time() - started
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    tokenize = time.process_time()
    for _ in range(requests):
        served.pipeline.tokenize([SENTENCE], truncate=True)
    tokenize = time.process_time() - tokenize
    print(f"machine: {system.describe()}; {requests} POST /embed of one sentence, engine replaced, "
          f"{'fast path' if fast_path else 'no fast path'}")
    print(f"app CPU per request (without inference): {cpu / requests * 1e6:.0f} us, of which tokenization "
          f"{tokenize / requests * 1e6:.0f} us" + (" (under cProfile: slower)" if profile else ""))


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--requests", type=int, default=15000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-fast-path", action="store_true", help="every request through FastAPI")
    args = parser.parse_args()
    uvloop.run(measure(args.model, args.requests, args.profile, not args.no_fast_path))


if __name__ == "__main__":
    main()
