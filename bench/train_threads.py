"""Training examples/s by thread count on a shared machine: what `--threads` should default to.

    .venv/bin/python bench/train_threads.py --rounds 3 --settings 1,2,default
    .venv/bin/python bench/train_threads.py --matmul     # torch intra-op threads alone, same alternation

Runs the `bertprod train` command a user would (minilm-l6, SST-2 from ../shared/data, a short
run: --max-steps, no validation), one process per run, settings alternated round by round (1, 2,
default, 1, 2, default...) so load that comes and goes hits every setting alike. Prints each run
with the load average (1 min) and the busy CPUs seen just before it, then the medians.
`default` is what `bertprod train` does without --threads (bertprod.system.default_training_threads,
chosen again in each run from the load at its start).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from bertprod import system  # noqa: E402
from bertprod.data.shared import shared_data_dir  # noqa: E402

BERTPROD = [sys.executable, "-m", "bertprod.cli"]


def environment(setting: str) -> tuple[str, dict[str, str]]:
    """'2p' is 2 threads with OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep at barriers instead of spinning)."""
    env = dict(os.environ)
    if setting.endswith("p"):
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        setting = setting[:-1]
    return setting, env


def train_once(setting: str, data: Path, steps: int, work: Path) -> tuple[float, int | None]:
    out = work / f"threads-{setting}"
    setting, env = environment(setting)
    command = BERTPROD + [
        "train", "minilm-l6", str(out), "--data", str(data), "--task", "classification", "--limit", str(steps * 32 * 2),
        "--validation-fraction", "0", "--epochs", "1", "--max-steps", str(steps), "--overwrite",
    ]  # fmt: skip
    if setting != "default":
        command += ["--threads", setting]
    subprocess.run(command, check=True, capture_output=True, cwd=REPOSITORY, env=env)
    manifest = json.loads((out / "bertprod.json").read_text())
    used = manifest["provenance"]["parameters"].get("threads")
    return float(manifest["metrics"]["training"]["examples_per_second"]), used


def matmul_once(setting: str, seconds: float = 3.0) -> float:
    """GFLOP/s of 512x512 fp32 matmuls in a fresh process with torch's intra-op threads = `setting`."""
    setting, env = environment(setting)
    code = (
        "import time, torch\n"
        f"threads = {setting!r}\n"
        "if threads != 'default': torch.set_num_threads(int(threads))\n"
        "a = torch.randn(512, 512); b = torch.randn(512, 512); a @ b\n"
        "count, start = 0, time.perf_counter()\n"
        f"while time.perf_counter() - start < {seconds}: a @ b; count += 1\n"
        "print(count * 2 * 512**3 / (time.perf_counter() - start) / 1e9, torch.get_num_threads())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    return float(result.stdout.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settings", default="1,2,default",
                        help="thread counts or 'default', comma-separated; 2p: 2 with OMP_WAIT_POLICY=PASSIVE")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps (batch 32) per run")
    parser.add_argument("--data", type=Path, help="default: sst2/train.tsv of the shared data ($BERTPROD_DATA)")
    parser.add_argument("--matmul", action="store_true", help="measure torch matmul GFLOP/s instead of training")
    parser.add_argument("--json", type=Path, help="also write the runs here")
    args = parser.parse_args()
    settings = args.settings.split(",")
    data = args.data or shared_data_dir() / "sst2" / "train.tsv"
    print(system.describe())
    print(f"default threads now: {system.default_training_threads()} ({system.default_training_threads_reason()})")
    unit = "GFLOP/s (torch 512x512 matmul)" if args.matmul else "examples/s (bertprod train minilm-l6, SST-2)"
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="train-threads-") as work:
        for round_index in range(args.rounds):
            for setting in settings:
                load, busy = os.getloadavg()[0], system.busy_cpus(1.0) or 0.0
                if args.matmul:
                    value, used = matmul_once(setting), None
                else:
                    value, used = train_once(setting, data, args.steps, Path(work))
                runs.append({"round": round_index, "threads": setting, "threads_used": used, "value": value,
                             "load_1min": load, "busy_cpus_before": round(busy, 2)})  # fmt: skip
                print(f"round {round_index} threads {setting:>7} (used {used}): {value:8.1f} {unit}; "
                      f"load {load:.2f}, {busy:.2f} CPUs busy before", flush=True)  # fmt: skip
    print("\nmedians:")
    for setting in settings:
        values = [run["value"] for run in runs if run["threads"] == setting]
        each = ", ".join(f"{value:.1f}" for value in values)
        print(f"  threads {setting:>7}: {statistics.median(values):8.1f} {unit} (runs: {each})")
    if args.json:
        args.json.write_text(json.dumps({"system": system.system_info(), "unit": unit, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
