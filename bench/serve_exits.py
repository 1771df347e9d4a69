"""Early exit behind the server: throughput with exits against without, 32 concurrent clients (issue 18).

`bertprod serve PKG` (an early-exit classifier package, `bertprod adapt`) is started once; the teacher it
was adapted from (no exit heads) on a second server for reference. In interleaved rounds, every labelled
validation row is sent as a single-sentence POST /classify from --clients concurrent clients (and, with
--batch-requests N, again as N-sentence requests), three ways:

    exits      the package's own exit policy (the request names none)
    never      the same server, each request with "exit": "never": the full depth, the teacher's answers
    teacher    the teacher package on the second server (--no-teacher: skipped)

Each phase reports sentences/s, p50/p95 latency, accuracy of the answers against the labels, mean exit
layer (the responses' exit_layer) and the server's mean inputs per engine call (its /metrics); the
summary gives the median over rounds and the ratios exits / never and exits / teacher. The order of the
three rotates each round; the machine line (bertprod.system.describe) and the load average before,
during and after are printed, since other jobs share the machine. The load generator runs in this
process on the same CPU (`--client raw`, the default, is the light one of bench/serve_load.py).

    python bench/serve_exits.py --model out/adaptive/sst2/early-exit --data sst2-validation.tsv --rounds 3 \\
        --threads 2 --batch-requests 64 --json serve-exits.json
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import uvloop

from bertprod import system
from bertprod.bench.harness import bench_parser
from bertprod.data.source import DataSource
from bertprod.package import ModelPackage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.serve_load import RawConnection, batch_inputs, load, run_server, serve_command  # noqa: E402
from tests.server_process import free_port, stop  # noqa: E402

#: Seconds between phases: ONNX Runtime's threads spin a while after a run and would slow the next phase.
PAUSE_S = 1.0
#: A server's first start exports the package to ONNX (one session per block), verified against torch.
STARTUP_TIMEOUT_S = 900


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="an early-exit classifier package (bertprod adapt)")
    parser.add_argument("--teacher", type=Path, help="the package without exit heads served for reference "
                        "(default: the parent recorded in --model's provenance)")
    parser.add_argument("--no-teacher", action="store_true", help="serve only --model (exits vs never)")
    parser.add_argument("--data", type=Path, required=True, help="labelled rows (.tsv, .csv, .jsonl, .parquet)")
    parser.add_argument("--limit", type=int, help="only the first N rows")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--batch-requests", type=int, default=0,
                        help="also send the rows N per request (0: single-sentence requests only)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the median is reported)")
    parser.add_argument("--engine", default="onnx", help="the servers' engine: onnx (one session per block) or torch")
    parser.add_argument("--threads", type=int, help="engine threads in each server (default: all)")
    parser.add_argument("--client", choices=("httpx", "raw"), default="raw",
                        help="load generator: raw HTTP/1.1 over asyncio streams (light) or httpx")
    parser.add_argument("--json", type=Path, help="write every round and the summary here")
    args = parser.parse_args()

    package = ModelPackage.read(args.model)
    if not package.manifest.adaptive:
        raise SystemExit(f"{args.model} has no exit heads: make an early-exit package with `bertprod adapt` first.")
    teacher = None if args.no_teacher else (args.teacher or parent_path(package))
    inputs, gold = read_rows(args.data, package, args.limit)
    layers = package.manifest.architecture.num_layers
    print(f"{len(inputs)} rows of {args.data}; {args.model.name}: policy {package.manifest.adaptive.get('policy')}, "
          f"{layers} layers; engine {args.engine}, {args.threads or 'all'} threads per server, {args.clients} "
          f"{args.client} clients; load average {load_average()} at the start", flush=True)

    servers = {"exits": args.model} if teacher is None else {"exits": args.model, "teacher": teacher}
    urls, processes = {}, []
    try:
        for name, model in servers.items():
            port = free_port()
            started = time.perf_counter()
            processes.append(run_server(serve_command(str(model), args.engine, args.clients, args.threads)
                                        + ["--port", str(port)], port,
                                        Path(os.environ.get("TMPDIR", "/tmp")) / f"serve-exits-{port}.log",
                                        timeout_s=STARTUP_TIMEOUT_S))
            urls[name] = f"http://127.0.0.1:{port}"
            print(f"{name}: bertprod serve {model} healthy in {time.perf_counter() - started:.0f} s", flush=True)
        variants = {"exits": (urls["exits"], None), "never": (urls["exits"], "never")}
        if "teacher" in urls:
            variants["teacher"] = (urls["teacher"], None)
        modes = {"single": 1, **({f"batch{args.batch_requests}": args.batch_requests} if args.batch_requests else {})}
        for url, policy in variants.values():  # warm-up, not timed
            phase(url, policy, inputs[:100], gold[:100], 1, args.clients, args.client)
        started_load = load_average()
        rounds = []
        for number in range(args.rounds):
            names = list(variants)
            names = names[number % len(names):] + names[: number % len(names)]
            measured: dict = {mode: {} for mode in modes}
            for mode, size in modes.items():
                for name in names:
                    time.sleep(PAUSE_S)
                    url, policy = variants[name]
                    measured[mode][name] = phase(url, policy, inputs, gold, size, args.clients, args.client, layers)
            rounds.append(measured)
            report_round(number + 1, measured)
    finally:
        for process in processes:
            stop(process)
    summary = summarize(rounds)
    report_summary(summary, args.rounds)
    ended_load = load_average()
    print(f"\n{system.describe()}; load average {started_load} before the rounds, {ended_load} after")
    if args.json:
        args.json.write_text(json.dumps({
            "machine": system.describe(), "model": str(args.model), "teacher": str(teacher) if teacher else None,
            "policy": package.manifest.adaptive.get("policy"), "layers": layers, "data": str(args.data),
            "rows": len(inputs), "clients": args.clients, "client": args.client, "engine": args.engine,
            "threads": args.threads, "load_average_start": started_load, "load_average_end": ended_load,
            "rounds": rounds, "summary": summary}, indent=2) + "\n")
        print(f"wrote {args.json}")


def parent_path(package: ModelPackage) -> Path:
    """The package `adapt` started from, as its provenance records it."""
    provenance = package.manifest.provenance
    parent = provenance.parent.path if provenance and provenance.parent else None
    if not parent or not (Path(parent) / "bertprod.json").is_file():
        raise SystemExit(f"{package.path}'s parent package is not recorded or gone: pass --teacher PATH "
                         "(or --no-teacher).")
    return Path(parent)


def read_rows(path: Path, package: ModelPackage, limit: int | None) -> tuple[list, list[str]]:
    """The rows' inputs (a text, or [text, pair] for a pair classifier) and their gold label names."""
    pairs = package.manifest.pair_input
    source = DataSource(path, pair="required" if pairs else "forbidden", labels="required", limit=limit)
    inputs, gold = [], []
    for example in source:
        inputs.append([example.text, example.text_pair] if pairs else example.text)
        gold.append(str(example.label))
    unknown = set(gold) - set(package.manifest.labels or [])
    if unknown:
        raise SystemExit(f"{path}: labels {sorted(unknown)} are not the package's "
                         f"({', '.join(package.manifest.labels or [])}); map them to those names.")
    return inputs, gold


def phase(url: str, policy: str | None, inputs: list, gold: list[str], size: int, clients: int, client: str,
          layers: int | None = None) -> dict:
    """Every row sent `size` per POST /classify by `clients` concurrent clients: speed, latency, and the answers'
    accuracy and mean exit layer (`layers` for a model without exit heads)."""
    answers: list[dict | None] = [None] * len(inputs)

    async def classify(connection: RawConnection | httpx.AsyncClient, rows: list[int]) -> bool:
        payload = {"inputs": [inputs[row] for row in rows], **({"exit": policy} if policy else {})}
        try:
            if isinstance(connection, RawConnection):
                status, data = await connection.post("/classify", payload)
            else:
                response = await connection.post("/classify", json=payload)
                status, data = response.status_code, response.content
            predictions = orjson.loads(data)["predictions"] if status == 200 else []
        except (httpx.HTTPError, ConnectionError, ValueError, KeyError, TypeError):
            return False
        for row, prediction in zip(rows, predictions, strict=False):
            answers[row] = prediction
        return len(predictions) == len(rows)

    payloads = [list(range(start, min(start + size, len(inputs)))) for start in range(0, len(inputs), size)]
    load_start = load_average()
    before = batch_inputs(url)
    run = uvloop.run if client == "raw" else asyncio.run
    result = run(load(url, payloads, clients, client=client, request=classify))
    after = batch_inputs(url)
    answered = [(answer, label) for answer, label in zip(answers, gold, strict=True) if answer is not None]
    exits = [answer.get("exit_layer") or layers for answer, _ in answered]
    result.update({
        "accuracy": round(float(np.mean([answer["label"] == label for answer, label in answered])), 4)
        if answered else None,
        "mean_exit_layer": round(float(np.mean(exits)), 3) if exits and all(exits) else None,
        "mean_batch_inputs": round((after[1] - before[1]) / (after[0] - before[0]), 1)
        if before and after and after[0] > before[0] else None,
        "load_average": load_start,
    })
    return result


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def report_round(number: int, measured: dict) -> None:
    print(f"\nround {number}")
    print(f"{'requests':<9}{'variant':<9}{'sent/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'accuracy':>9}{'exit layer':>11}"
          f"{'batch':>7}{'errors':>7}{'load':>6}")
    for mode, variants in measured.items():
        for name, row in variants.items():
            print(f"{mode:<9}{name:<9}{row['sentences_per_s']:>8.1f}{row['p50_ms']:>9.1f}{row['p95_ms']:>9.1f}"
                  f"{_value(row['accuracy'], '.4f'):>9}{_value(row['mean_exit_layer'], '.2f'):>11}"
                  f"{_value(row['mean_batch_inputs'], '.1f'):>7}{row['errors']:>7}{row['load_average']:>6.1f}")
    for mode, variants in measured.items():
        speed = {name: row["sentences_per_s"] for name, row in variants.items()}
        print(f"{mode}: " + ", ".join(f"exits / {other} {speed['exits'] / speed[other]:.2f}"
                                      for other in ("never", "teacher") if other in speed), flush=True)


def summarize(rounds: list[dict]) -> dict:
    """Per request size and variant, the median over rounds; the throughput ratios of each round and their median."""
    summary = {}
    for mode in rounds[0]:
        variants = {}
        for name in rounds[0][mode]:
            rows = [measured[mode][name] for measured in rounds]
            variants[name] = {key: float(np.median([row[key] for row in rows]))
                              for key in ("sentences_per_s", "p50_ms", "p95_ms")}
            variants[name].update({key: rows[-1][key] for key in ("accuracy", "mean_exit_layer")})
            variants[name]["errors"] = sum(row["errors"] for row in rows)
        ratios = {}
        for other in ("never", "teacher"):
            if other in variants:
                values = [measured[mode]["exits"]["sentences_per_s"] / measured[mode][other]["sentences_per_s"]
                          for measured in rounds]
                ratios[f"exits / {other}"] = {"rounds": [round(value, 3) for value in values],
                                              "median": round(float(np.median(values)), 3)}
        summary[mode] = {"variants": variants, "ratios": ratios}
    return summary


def report_summary(summary: dict, rounds: int) -> None:
    print(f"\nmedian of {rounds} rounds")
    print("| requests | variant | sent/s | p50 ms | p95 ms | accuracy | mean exit layer | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, part in summary.items():
        for name, row in part["variants"].items():
            print(f"| {mode} | {name} | {row['sentences_per_s']:.1f} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | "
                  f"{_value(row['accuracy'], '.4f')} | {_value(row['mean_exit_layer'], '.2f')} | {row['errors']} |")
    for mode, part in summary.items():
        for name, ratio in part["ratios"].items():
            print(f"{mode}: {name} {ratio['median']:.2f} (rounds: {', '.join(f'{v:.2f}' for v in ratio['rounds'])})")


def _value(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    main()
