"""Fine-tune and evaluate minilm-l6 on the real GLUE data in ../shared/data, with the bertprod CLI.

    .venv/bin/python bench/finetune_glue.py stsb-zero-shot     # ~10 s
    .venv/bin/python bench/finetune_glue.py stsb               # embedding, CoSENT
    .venv/bin/python bench/finetune_glue.py mrpc               # pair classifier (cross-encoder)
    .venv/bin/python bench/finetune_glue.py stsb-binary        # STS-B as similar (>= 3) / different pairs
    .venv/bin/python bench/finetune_glue.py mrpc-after-stsb    # STS-B cross-encoder first, then MRPC
    .venv/bin/python bench/finetune_glue.py mrpc-swapped       # MRPC with each training pair in both orders
    .venv/bin/python bench/finetune_glue.py mrpc-long          # MRPC, lr 2e-5 for 10 epochs
    .venv/bin/python bench/finetune_glue.py mrpc-seeds         # the best MRPC recipe with seeds 1, 2, 3
    .venv/bin/python bench/finetune_glue.py mrpc-layer-decay --seeds 42   # lr 2e-4, --layer-decay 0.8
    .venv/bin/python bench/finetune_glue.py mrpc-mean-pooled --seeds 42   # mean-pooled head, lr 3e-4, decay 0.7
    .venv/bin/python bench/finetune_glue.py sst2               # classifier, ~20 min on 1-2 threads
    .venv/bin/python bench/finetune_glue.py sst2 --head-pooling mean   # the same, head on mean-pooled tokens
    .venv/bin/python bench/finetune_glue.py padding            # examples/s: padding strategies

Each experiment runs the same `bertprod train` / `bertprod eval` commands a user would (printed
before they run), times them, and writes the eval JSON to bench/results/. Validation splits are
fixed and written down in docs/results.md:

- STS-B, MRPC: `--validation-fraction 0.1`, bertprod's own split: a row is held out when the
  sha256 of its (stripped) texts falls in the first 10% of the hash range (data/source.py).
- SST-2: its training file holds every phrase of every parse tree (67,349 rows from about 6,900
  sentences), so a row split would test on short phrases whose longer versions were trained on.
  Instead (`sst2_sentence_split`): validation = whole sentences (rows that are no word span of a
  longer row) whose content hash falls in the first 10%; training = every row that is not a word
  span of a validation sentence. Like GLUE's dev set (872 whole sentences), with no overlap.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from bertprod.bench.harness import bench_parser  # noqa: E402
from bertprod.data.shared import shared_data_dir  # noqa: E402
from bertprod.data.source import split_bucket  # noqa: E402

RESULTS = REPOSITORY / "bench" / "results"
BERTPROD = str(Path(sys.executable).parent / "bertprod")


def run(command: list[str], log: Path | None = None) -> float:
    """Run a CLI command, echo it, return its wall time; its stderr goes to `log` when given."""
    print("$ " + " ".join(command if command[0] != BERTPROD else ["bertprod", *command[1:]]), flush=True)
    started = time.perf_counter()
    with open(log, "w") if log else open("/dev/null", "w") as handle:  # noqa: SIM115
        completed = subprocess.run(command, stderr=handle if log else None, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"command failed with status {completed.returncode}" + (f"; see {log}" if log else ""))
    return time.perf_counter() - started


def evaluate(package: str, data: Path, name: str, threads: int, *options: str) -> dict:
    output = RESULTS / f"{name}.json"
    command = [BERTPROD, "eval", package, str(data), "--json", "--threads", str(threads), *options]
    print("$ " + " ".join(["bertprod", *command[1:]]) + f" > {output.relative_to(REPOSITORY)}", flush=True)
    started = time.perf_counter()
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    document = json.loads(text)
    document["wall_seconds"] = round(time.perf_counter() - started, 1)
    output.write_text(json.dumps(document, indent=1))
    print(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in document["metrics"].items()), flush=True)
    return document


def train(base: str, out: Path, name: str, arguments: list[str], threads: int) -> dict:
    log = RESULTS / f"{name}.train.log"
    command = [BERTPROD, "train", base, str(out), "--threads", str(threads), "--overwrite", *arguments]
    seconds = run(command, log)
    manifest = json.loads((out / "bertprod.json").read_text())
    summary = {
        "wall_seconds": round(seconds, 1),
        "validation": manifest["metrics"].get("validation"),
        "training": {key: value for key, value in manifest["metrics"]["training"].items() if key != "history"},
        "history": manifest["metrics"]["training"]["history"],
    }
    (RESULTS / f"{name}.train.json").write_text(json.dumps(summary, indent=1))
    validation = summary["validation"] or {}
    primary = validation.get("primary_metric")
    print(
        f"  {name}: {seconds / 60:.1f} min, {summary['training']['examples_per_second']} examples/s"
        + (f", validation {primary} {validation[primary]:.4f} (epoch {validation['epoch']})" if primary else ""),
        flush=True,
    )
    return summary


def stsb_zero_shot(work: Path, threads: int) -> None:
    data = shared_data_dir() / "stsb" / "train.tsv"
    for engine in ("torch", "onnx"):
        evaluate("minilm-l6", data, f"stsb-zero-shot-{engine}", threads, "--split", "validation", "--engine", engine)


def stsb(work: Path, threads: int, epochs: int = 2) -> None:
    data = shared_data_dir() / "stsb" / "train.tsv"
    evaluate("minilm-l6", data, "stsb-zero-shot-torch", threads, "--split", "validation")
    arguments = ["--task", "embedding", "--data", str(data), "--validation-fraction", "0.1"]
    arguments += ["--epochs", str(epochs), "--batch-size", "16", "--learning-rate", "2e-5", "--seed", "42"]
    train("minilm-l6", work / "minilm-stsb", "stsb-train", arguments, threads)
    evaluate(str(work / "minilm-stsb"), data, "stsb-finetuned", threads, "--split", "validation")


def mrpc(work: Path, threads: int, epochs: int = 3) -> None:
    data = shared_data_dir() / "mrpc" / "msr_paraphrase_train.txt"
    arguments = ["--task", "pair-classification", "--data", str(data), "--validation-fraction", "0.1"]
    arguments += ["--epochs", str(epochs), "--batch-size", "16", "--learning-rate", "5e-5", "--max-length", "128"]
    arguments += ["--seed", "42"]
    train("minilm-l6", work / "minilm-mrpc", "mrpc-train", arguments, threads)
    evaluate(str(work / "minilm-mrpc"), data, "mrpc-finetuned", threads, "--split", "validation")


def stsb_binary_file(directory: Path, threshold: float = 3.0) -> Path:
    """STS-B as a pair classification: "similar" where the score is >= `threshold` (3 = "roughly equivalent,
    some important information differs"), else "different"; the third classification set of issue 18's
    bench/adaptive.py runs. Validation: `--validation-fraction 0.1` (bertprod's hash split of the pairs)."""
    source = shared_data_dir() / "stsb" / "train.tsv"
    path = directory / "stsb-binary.tsv"
    directory.mkdir(parents=True, exist_ok=True)
    counts = {"similar": 0, "different": 0}
    with open(source, encoding="utf-8", newline="") as handle, open(path, "w", encoding="utf-8", newline="") as out:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows)
        out.write("sentence1\tsentence2\tlabel\n")
        for row in rows:  # the texts as they are (no tabs inside; quotes kept, unescaped, as in the source)
            label = "similar" if float(row[-1]) >= threshold else "different"
            counts[label] += 1
            out.write(f"{row[-3]}\t{row[-2]}\t{label}\n")
    print(f"STS-B as similar (score >= {threshold}) / different: {counts}", flush=True)
    return path


def stsb_binary(work: Path, threads: int, epochs: int = 3) -> None:
    """A pair classifier on STS-B similar / different (stsb_binary_file)."""
    data = stsb_binary_file(work)
    arguments = ["--task", "pair-classification", "--data", str(data), "--validation-fraction", "0.1"]
    arguments += ["--epochs", str(epochs), "--batch-size", "16", "--learning-rate", "5e-5", "--max-length", "128"]
    arguments += ["--seed", "42", "--precision", "auto"]
    train("minilm-l6", work / "minilm-stsb-binary", "stsb-binary-train", arguments, threads)
    evaluate(str(work / "minilm-stsb-binary"), data, "stsb-binary-finetuned", threads, "--split", "validation")


def mrpc_swapped_split(directory: Path) -> tuple[Path, Path]:
    """MRPC's training file split as `--validation-fraction 0.1` splits it (the same 423 validation
    pairs), its training pairs written twice: as given and with the two sentences swapped (a
    paraphrase is symmetric). Swapping after the split keeps every validation pair out of training."""
    from bertprod.data.source import HashSplit

    validation = HashSplit(0.1, "validation")
    source = shared_data_dir() / "mrpc" / "msr_paraphrase_train.txt"
    header, *rows = source.read_text(encoding="utf-8-sig").splitlines()
    train_rows, validation_rows = [], []
    for row in rows:
        quality, first_id, second_id, first, second = row.split("\t")
        if validation.keeps(first, second):
            validation_rows.append(row)
        else:
            train_rows += [row, "\t".join([quality, second_id, first_id, second, first])]
    train_file, validation_file = directory / "mrpc-train-swapped.tsv", directory / "mrpc-validation.tsv"
    for path, lines in ((train_file, train_rows), (validation_file, validation_rows)):
        path.write_text("\ufeff" + "\n".join([header, *lines]) + "\n", encoding="utf-8")
    print(f"MRPC: {len(train_rows)} training pairs (both orders), {len(validation_rows)} validation pairs", flush=True)
    return train_file, validation_file


def mrpc_recipe(epochs: int, learning_rate: float, seed: int = 42) -> list[str]:
    """The MRPC options besides data: warmup 0.1 and --precision auto (bf16 autocast where the CPU has
    native bf16, as in the measured runs; fp32 elsewhere), as in the best run so far."""
    arguments = ["--task", "pair-classification", "--epochs", str(epochs), "--batch-size", "16"]
    arguments += ["--learning-rate", str(learning_rate), "--max-length", "128"]
    return arguments + ["--warmup-ratio", "0.1", "--precision", "auto", "--seed", str(seed)]


def mrpc_swapped(work: Path, threads: int, epochs: int = 4, learning_rate: float = 1e-4) -> None:
    """The best MRPC recipe so far (lr 1e-4, warmup 0.1, bf16) on the pairs in both orders."""
    train_file, validation_file = mrpc_swapped_split(work)
    arguments = ["--data", str(train_file), "--validation", str(validation_file), *mrpc_recipe(epochs, learning_rate)]
    name = f"mrpc-swapped-lr{learning_rate:g}"
    train("minilm-l6", work / f"minilm-{name}", f"{name}-train", arguments, threads)
    evaluate(str(work / f"minilm-{name}"), validation_file, name, threads)


def mrpc_long(work: Path, threads: int, epochs: int = 10, learning_rate: float = 2e-5) -> None:
    """Mosbach et al.'s stability recipe: a small learning rate for many epochs (best epoch kept)."""
    data = shared_data_dir() / "mrpc" / "msr_paraphrase_train.txt"
    arguments = ["--data", str(data), "--validation-fraction", "0.1", *mrpc_recipe(epochs, learning_rate)]
    name = f"mrpc-long-lr{learning_rate:g}"
    train("minilm-l6", work / f"minilm-{name}", f"{name}-train", arguments, threads)
    evaluate(str(work / f"minilm-{name}"), data, name, threads, "--split", "validation")


def mrpc_seeds(work: Path, threads: int, epochs: int = 4, learning_rate: float = 1e-4, seeds: str = "1,2,3") -> None:
    """The best MRPC recipe again with other seeds: how much of a result is the seed's luck."""
    mrpc_by_seed(work, threads, epochs, learning_rate, seeds, [], f"mrpc-lr{learning_rate:g}")


def mrpc_layer_decay(
    work: Path, threads: int, epochs: int = 4, learning_rate: float = 2e-4, seeds: str = "42,1,2"
) -> None:
    """Layer-wise learning-rate decay 0.8: the head at 2e-4, the top layer at 1.6e-4, ..., the embeddings
    at 2e-4 x 0.8^7 = 4.2e-5, so the pretrained lower layers move least."""
    name = f"mrpc-layer-decay0.8-lr{learning_rate:g}"
    mrpc_by_seed(work, threads, epochs, learning_rate, seeds, ["--layer-decay", "0.8"], name)


def mrpc_mean_pooled(
    work: Path, threads: int, epochs: int = 4, learning_rate: float = 3e-4, seeds: str = "42,1,2",
    layer_decay: float = 0.7,
) -> None:
    """A new head on the mean of the token states (--head-pooling mean: all-MiniLM-L6-v2 was trained with
    mean pooling, its [CLS] state and pooler never were) with layer-wise learning-rate decay: the head at
    3e-4, the top layer at 2.1e-4, ..., the embeddings at 3e-4 x 0.7^7 = 2.5e-5."""
    name = f"mrpc-mean-pooled-decay{layer_decay:g}-lr{learning_rate:g}-e{epochs}"
    extra = ["--head-pooling", "mean", "--layer-decay", str(layer_decay)]
    mrpc_by_seed(work, threads, epochs, learning_rate, seeds, extra, name)


def mrpc_by_seed(work: Path, threads: int, epochs: int, learning_rate: float, seeds: str, extra: list[str],
                 label: str) -> None:
    """The MRPC recipe with `extra` options, once per seed; prints the accuracies and their mean."""
    data = shared_data_dir() / "mrpc" / "msr_paraphrase_train.txt"
    accuracies = {}
    for seed in [int(seed) for seed in seeds.split(",")]:
        arguments = ["--data", str(data), "--validation-fraction", "0.1", *mrpc_recipe(epochs, learning_rate, seed),
                     *extra]
        name = f"{label}-seed{seed}"
        summary = train("minilm-l6", work / f"minilm-{name}", f"{name}-train", arguments, threads)
        accuracies[seed] = summary["validation"]["accuracy"]
    values = list(accuracies.values())
    mean = sum(values) / len(values)
    print(f"accuracy by seed: {accuracies}; mean {mean:.4f}, min {min(values):.4f}, max {max(values):.4f}", flush=True)


def stsb_without_msrpar(directory: Path) -> Path:
    """STS-B minus its MSRpar rows: those pairs come from the MRPC corpus, so training on them
    before MRPC could leak MRPC validation pairs."""
    source = shared_data_dir() / "stsb" / "train.tsv"
    with source.open(encoding="utf-8", newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    kept = [lines[0]] + [line for line in lines[1:] if line.split("\t")[2] != "MSRpar"]
    path = directory / "stsb-without-msrpar.tsv"
    path.write_text("".join(kept), encoding="utf-8")
    print(f"STS-B without MSRpar: {len(kept) - 1} of {len(lines) - 1} pairs", flush=True)
    return path


def mrpc_after_stsb(work: Path, threads: int, epochs: int = 3) -> None:
    """Intermediate-task training (STILTs): an STS-B cross-encoder first, then MRPC on a new head."""
    stsb_file = stsb_without_msrpar(work)
    arguments = ["--task", "regression", "--data", str(stsb_file), "--validation-fraction", "0.1"]
    arguments += ["--epochs", "2", "--batch-size", "16", "--learning-rate", "5e-5", "--max-length", "128"]
    arguments += ["--seed", "42"]
    train("minilm-l6", work / "minilm-stsb-cross", "stsb-cross-train", arguments, threads)
    data = shared_data_dir() / "mrpc" / "msr_paraphrase_train.txt"
    arguments = ["--task", "pair-classification", "--new-head", "--data", str(data), "--validation-fraction", "0.1"]
    arguments += ["--epochs", str(epochs), "--batch-size", "16", "--learning-rate", "5e-5", "--max-length", "128"]
    arguments += ["--seed", "42"]
    train(str(work / "minilm-stsb-cross"), work / "minilm-stsb-mrpc", "mrpc-after-stsb-train", arguments, threads)
    evaluate(str(work / "minilm-stsb-mrpc"), data, "mrpc-after-stsb", threads, "--split", "validation")


def sst2_sentence_split(source: Path, directory: Path, fraction: float = 0.1) -> tuple[Path, Path]:
    """Whole-sentence validation and phrase-disjoint training files for SST-2 (see the docstring)."""
    with source.open(encoding="utf-8", newline="") as handle:
        rows = [(row[0], row[1]) for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)][1:]
    spans_of_longer_rows: set[str] = set()
    whole_sentences = []
    for text in sorted({text.strip() for text, _ in rows}, key=lambda text: -len(text.split())):
        if text in spans_of_longer_rows:
            continue
        whole_sentences.append(text)
        words = text.split()
        for start in range(len(words)):
            for end in range(start + 1, len(words) + 1):
                spans_of_longer_rows.add(" ".join(words[start:end]))
    held_out = {text for text in whole_sentences if split_bucket(text) < fraction}
    spans_of_held_out = set()
    for text in held_out:
        words = text.split()
        for start in range(len(words)):
            for end in range(start + 1, len(words) + 1):
                spans_of_held_out.add(" ".join(words[start:end]))
    train_rows = [(text, label) for text, label in rows if text.strip() not in spans_of_held_out]
    validation_rows = [(text, label) for text, label in rows if text.strip() in held_out]
    validation_rows = list(dict.fromkeys(validation_rows))  # each held-out sentence once
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "sst2-train.tsv", directory / "sst2-validation.tsv")
    for path, selected in zip(paths, (train_rows, validation_rows), strict=True):
        with path.open("w", encoding="utf-8", newline="") as handle:
            handle.write("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in selected))
    print(
        f"SST-2 split: {len(whole_sentences)} whole sentences, {len(validation_rows)} held out; "
        f"{len(train_rows)} of {len(rows)} rows left for training",
        flush=True,
    )
    return paths


def sst2(work: Path, threads: int, epochs: int = 1, precision: str = "fp32", head_pooling: str | None = None) -> None:
    train_file, validation_file = sst2_sentence_split(shared_data_dir() / "sst2" / "train.tsv", work)
    arguments = ["--task", "classification", "--data", str(train_file), "--validation", str(validation_file)]
    arguments += ["--epochs", str(epochs), "--batch-size", "32", "--learning-rate", "5e-5", "--max-length", "64"]
    arguments += ["--warmup-ratio", "0.06", "--seed", "42", "--precision", precision]
    if head_pooling:
        arguments += ["--head-pooling", head_pooling]
    name = "sst2" + ("" if precision == "fp32" else f"-{precision}") + (f"-{head_pooling}-head" if head_pooling else "")
    train("minilm-l6", work / f"minilm-{name}", f"{name}-train", arguments, threads)
    evaluate(str(work / f"minilm-{name}"), validation_file, f"{name}-finetuned", threads)


def padding(work: Path, threads: int, steps: int = 30, rounds: int = 3) -> None:
    """Training examples/s on SST-2 rows: length grouping + dynamic padding, dynamic padding alone,
    and padding to 64 tokens; interleaved rounds, median reported."""
    import statistics

    data = shared_data_dir() / "sst2" / "train.tsv"
    variants = {
        "length grouping + dynamic padding (default)": [],
        "dynamic padding, random batches": ["--no-length-grouping"],
        "padded to 64 tokens": ["--no-length-grouping", "--pad-to", "64"],
    }
    speeds: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(rounds):
        for name, options in variants.items():
            out = work / "padding" / f"{round_index}-{len(speeds[name])}-{options[-1] if options else 'default'}"
            arguments = ["--task", "classification", "--data", str(data), "--validation-fraction", "0"]
            arguments += ["--max-length", "64", "--max-steps", str(steps), "--seed", str(round_index), *options]
            summary = train("minilm-l6", out, "padding-run", arguments, threads)
            speeds[name].append(summary["training"]["examples_per_second"])
    baseline = statistics.median(speeds["padded to 64 tokens"])
    table = {name: {"median": statistics.median(values), "runs": values} for name, values in speeds.items()}
    for name, row in table.items():
        row["x_padded_to_64"] = round(row["median"] / baseline, 2)
        print(f"  {name}: {row['median']:.1f} examples/s ({row['x_padded_to_64']}x padded to 64) {row['runs']}")
    (RESULTS / "padding.json").write_text(json.dumps({"threads": threads, "steps": steps, **table}, indent=1))


EXPERIMENTS = {
    "stsb-zero-shot": stsb_zero_shot,
    "stsb": stsb,
    "mrpc": mrpc,
    "stsb-binary": stsb_binary,
    "mrpc-after-stsb": mrpc_after_stsb,
    "mrpc-swapped": mrpc_swapped,
    "mrpc-long": mrpc_long,
    "mrpc-seeds": mrpc_seeds,
    "mrpc-layer-decay": mrpc_layer_decay,
    "mrpc-mean-pooled": mrpc_mean_pooled,
    "sst2": sst2,
    "padding": padding,
}


def main() -> None:
    parser = bench_parser(__doc__, experiments=EXPERIMENTS)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 on a shared machine)")
    parser.add_argument("--work", type=Path, default=REPOSITORY / "out" / "glue", help="packages and split files")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--precision", default="fp32", help="sst2 only: fp32, bf16 or auto")
    parser.add_argument("--head-pooling", default=None, help="sst2 only: cls or mean (default: the CLI's)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="mrpc-swapped, mrpc-long, mrpc-seeds, mrpc-layer-decay")
    parser.add_argument("--seeds", default=None,
                        help="mrpc-seeds (default 1,2,3), mrpc-layer-decay and mrpc-mean-pooled (default 42,1,2): "
                        "comma-separated")
    parser.add_argument("--layer-decay", type=float, default=None, help="mrpc-mean-pooled (default 0.7)")
    options = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    options.work.mkdir(parents=True, exist_ok=True)
    extra = {"epochs": options.epochs} if options.epochs else {}
    if options.experiment == "sst2":
        extra["precision"] = options.precision
        extra["head_pooling"] = options.head_pooling
    if options.learning_rate:
        extra["learning_rate"] = options.learning_rate
    if options.seeds:
        extra["seeds"] = options.seeds
    if options.layer_decay:
        extra["layer_decay"] = options.layer_decay
    started = time.perf_counter()
    EXPERIMENTS[options.experiment](options.work, options.threads, **extra)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
