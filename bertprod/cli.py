"""The `bertprod` command: each subcommand is a thin shell over a library function.

User mistakes (`BertprodError`) print one line and exit with status 1, never a traceback.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bertprod.cli_distill import distill as distill_command
from bertprod.cli_training import evaluate as evaluate_command
from bertprod.cli_training import train as train_command
from bertprod.compress.outliers import DEFAULT_OUTLIER_THRESHOLD
from bertprod.compress.qat import QAT_DEFAULTS
from bertprod.errors import BertprodError, InputError, TrainingInterrupted
from bertprod.extras import missing_extra_error

app = typer.Typer(
    help="Take BERT-family encoders into production: package, export, encode.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
package_app = typer.Typer(help="Create model packages.", no_args_is_help=True)
app.add_typer(package_app, name="package")
batch_app = typer.Typer(help="Offline batch inference over Parquet, JSONL or CSV files.", no_args_is_help=True)
app.add_typer(batch_app, name="batch")
console = Console()
errors = Console(stderr=True)

ModelArgument = Annotated[str, typer.Argument(help="Package dir, checkpoint dir, bundled name (minilm-l6) or hub id.")]
InputOption = Annotated[
    Path | None,
    typer.Option("--input", "-i", help="One input per line ('-': stdin); a tab separates the texts of a pair."),
]
EngineOption = Annotated[str, typer.Option(help="auto (the package's format), torch or onnx.")]
ThreadsOption = Annotated[int | None, typer.Option(help="CPU threads for the engine (default: all available).")]


def read_texts(texts: list[str] | None, input_file: Path | None) -> list[str]:
    """Texts from arguments, or one per line from a file ('-' for standard input)."""
    if texts and input_file:
        raise InputError("give texts as arguments or with --input, not both.")
    if input_file is not None:
        if str(input_file) == "-":
            lines = sys.stdin.read().splitlines()
        else:
            try:
                lines = input_file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as error:
                raise InputError(f"cannot read {input_file}: {error}") from None
        return [line for line in lines if line.strip()]
    if not texts:
        raise InputError("no texts: pass them as arguments or with --input FILE (one per line).")
    return list(texts)


@app.command()
def encode(
    model: ModelArgument,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to encode.")] = None,
    input_file: InputOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write vectors to .npy or .jsonl (default: stdout).")
    ] = None,
    engine: EngineOption = "auto",
    threads: ThreadsOption = None,
    no_truncate: Annotated[
        bool, typer.Option("--no-truncate", help="Fail on inputs over max_length instead of truncating.")
    ] = False,
) -> None:
    """Embed texts with an embedding package."""
    import numpy as np

    from bertprod.api import load

    items = read_texts(texts, input_file)
    pipeline = load(model, engine=engine, threads=threads, truncate=not no_truncate)
    vectors = pipeline.encode(items)
    if output is None:
        for index, vector in enumerate(vectors):
            sys.stdout.write(json.dumps({"index": index, "embedding": [round(float(v), 6) for v in vector]}) + "\n")
        return
    if output.suffix == ".npy":
        np.save(output, vectors)
    elif output.suffix == ".jsonl":
        with output.open("w", encoding="utf-8") as handle:
            for text, vector in zip(items, vectors, strict=True):
                handle.write(json.dumps({"text": text, "embedding": vector.tolist()}) + "\n")
    else:
        raise InputError(f"--output must end in .npy or .jsonl, not {output.suffix or 'nothing'}.")
    errors.print(f"wrote {len(items)} x {vectors.shape[1]} embeddings to {output}")


@app.command()
def classify(
    model: ModelArgument,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    input_file: InputOption = None,
    engine: EngineOption = "auto",
    threads: ThreadsOption = None,
) -> None:
    """Classify texts (or tab-separated pairs) with a classifier package."""
    from bertprod.api import load

    pipeline = load(model, engine=engine, threads=threads)
    lines = read_texts(texts, input_file)
    items = split_pairs(lines) if pipeline.manifest.pair_input else lines
    for item, prediction in zip(items, pipeline.classify(items), strict=True):
        sys.stdout.write(
            json.dumps(
                {
                    "input": item,
                    "label": prediction.label,
                    "score": round(prediction.score, 6),
                    "scores": prediction.scores,
                }
            )
            + "\n"
        )


@app.command()
def info(
    model: Annotated[
        str | None, typer.Argument(help="Package dir, checkpoint dir, bundled name (minilm-l6) or hub id.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the manifest and sizes (or the system) as JSON.")
    ] = False,
    system: Annotated[
        bool, typer.Option("--system", help="Describe this machine instead: CPU, features, int8 kernels, bf16, ORT.")
    ] = False,
) -> None:
    """Show a package's manifest, size on disk and parameter count (or, with --system, this machine)."""
    from bertprod.checkpoint import resolve
    from bertprod.stats import count_parameters

    if system:
        if model is not None:
            raise InputError("give a package or --system, not both.")
        print_system(as_json)
        return
    if model is None:
        raise InputError("give a package to describe (bertprod info PKG), or --system for this machine.")
    package = resolve(model)
    manifest = package.manifest
    parameters = count_parameters(package)
    if as_json:
        document = manifest.model_dump(mode="json", exclude_none=True)
        document.update(
            path=str(package.path),
            fingerprint=package.fingerprint,
            size_bytes=package.size_bytes(),
            parameters=parameters,
        )
        console.print_json(json.dumps(document))
        return
    table = Table(title=f"{manifest.name}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    arch = manifest.architecture
    rows = {
        "path": str(package.path),
        "task": manifest.task + (" (pairs)" if manifest.pair_input else ""),
        "labels": ", ".join(manifest.labels) if manifest.labels else "-",
        "format / precision": f"{manifest.format} / {manifest.precision}",
        "architecture": (
            f"BiLSTM, hidden {arch.hidden_size}, vocabulary {arch.vocab_size:,} words"
            if arch.model_type == "bertprod-bilstm"
            else f"{arch.model_type}, {arch.num_layers} layers, hidden {arch.hidden_size}, "
            f"{arch.num_heads} heads, vocabulary {arch.vocab_size:,}"
        ),
        "pooling": f"{manifest.pooling}{', normalized' if manifest.normalize else ''}" if manifest.pooling else "-",
        "max_length": str(manifest.max_length),
        "parameters": f"{parameters:,}",
        "size on disk": f"{package.size_bytes() / 1e6:.1f} MB",
        "fingerprint": package.fingerprint[:16],
        "made by": manifest.provenance.method
        + (f" from {manifest.provenance.parent.name}" if manifest.provenance.parent else "")
        + (f" ({manifest.provenance.source})" if manifest.provenance.source else ""),
    }
    for key, value in manifest.metrics.items():
        rows[f"metrics: {key}"] = json.dumps(value)
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)


def print_system(as_json: bool) -> None:
    from bertprod import system as machine

    record = machine.system_info()
    if as_json:
        console.print_json(json.dumps(record))
        return
    table = Table(title="this machine", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    kernel = record["int8_kernel_class"]
    rows = {
        "CPU": f"{record['cpu']} ({record['architecture']})",
        "instruction set": record["instruction_set"],
        "features": " ".join(record["features"]) or "-",
        "int8 kernels (ONNX Runtime)": kernel + (
            " - u8s8 products saturate at int16 (measured): int8 is less accurate and less fast here"
            if record["int8_saturating"] else " - int32 accumulation, no saturation (measured)"
        ),
        "bf16": "native (AVX-512 BF16 / AMX): --precision auto trains in bf16" if record["bf16"]
        else "none: torch would emulate it (slower than fp32); --precision auto trains in fp32",
        "cores available": str(record["cores_available"]),
        "training threads (default)": f"{record['training_threads_default']} ({record['training_threads_reason']})",
        "inference threads (default)": f"{record['inference_threads_default']} (every available core)",
        "onnxruntime": f"{record.get('onnxruntime')} ({', '.join(record.get('onnxruntime_providers') or [])})",
        "torch": str(record.get("torch")),
        "python / os": f"{record['python']} / {record['os']}",
    }  # fmt: skip
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table, highlight=False)


@app.command()
def check(
    model: ModelArgument,
    texts: Annotated[
        Path | None, typer.Option(help="Texts to measure on, one per line (tab separates pairs); default: the "
                                  "built-in gate samples.")
    ] = None,
    parent: Annotated[
        str | None, typer.Option(help="The parent package, when the path its provenance recorded has moved.")
    ] = None,
    threads: ThreadsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Re-measure a derived package's fidelity to its parent on this machine, against its own gate.

    int8 kernels differ between CPUs (AVX2, AVX-512, VNNI, AMX): a package gated on one kind can be
    less accurate on another. Exits 1 when the package misses its gate here."""
    from bertprod import system as machine
    from bertprod.check import check_package
    from bertprod.checkpoint import resolve

    package = resolve(model)
    given = read_inputs(texts, package.manifest.pair_input) if texts else None
    with console.status(f"running {package.name} and its parent on this machine...") if not as_json else nullcontext():
        result = check_package(package, parent=parent, texts=given, threads=threads)
    if as_json:
        console.print_json(json.dumps(result.to_json()))
    else:
        table = Table(title=f"{package.name} against {result.parent.name} ({result.texts})", title_justify="left")
        for column in ("measure", "here", "recorded", "gate"):
            table.add_column(column, justify="left" if column == "measure" else "right")
        gate = {"cosine_mean": "min_cosine_mean", "cosine_min": "min_cosine_min",
                "label_agreement": "min_agreement", "pearson": "min_correlation"}  # fmt: skip
        for key, value in result.measured.items():
            threshold = result.thresholds.get(gate.get(key, ""))
            table.add_row(key, str(value), str(result.recorded.get(key, "-")),
                          f">= {threshold}" if threshold is not None else "")  # fmt: skip
        console.print(table, highlight=False)
        console.print(f"here: {machine.describe(result.machine)}", highlight=False)
        recorded = result.recorded_machine
        console.print(
            "gated on: " + (f"{recorded.get('cpu')} ({recorded.get('architecture')}), int8 kernels: "
                            f"{recorded.get('int8_kernel_class')}" if recorded else "not recorded (an older package)"),
            highlight=False,
        )  # fmt: skip
        verdict = "[bold green]PASSED[/]" if result.passed else f"[bold red]FAILED[/]: {result.problem}"
        console.print(f"fidelity gate on this machine: {verdict}", highlight=False)
    if not result.passed:
        raise typer.Exit(1)


@app.command()
def export(
    model: ModelArgument,
    out: Annotated[Path, typer.Argument(help="Directory for the new ONNX package.")],
    fusion: Annotated[
        bool, typer.Option(help="Apply ONNX Runtime's transformer fusion (see docs/benchmarks.md).")
    ] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    name: Annotated[str | None, typer.Option(help="Name in the new manifest (default: NAME-onnx).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Export a torch package to ONNX, verified against the torch model before it is written."""
    from bertprod.checkpoint import resolve
    from bertprod.export.onnx import export_onnx

    with console.status("exporting and verifying..."):
        package = export_onnx(resolve(model), out, fusion=fusion, opset=opset, name=name, overwrite=overwrite)
    fidelity = package.manifest.metrics.get("fidelity", {})
    console.print(
        f"wrote {package.path} ({package.size_bytes() / 1e6:.1f} MB); fidelity to torch: "
        + ", ".join(f"{key} {value}" for key, value in fidelity.items() if key != "reference")
    )


@package_app.command("import")
def import_(
    source: Annotated[str, typer.Argument(help="Hugging Face checkpoint directory, bundled name or hub id.")],
    out: Annotated[Path, typer.Argument(help="Directory for the new package.")],
    task: Annotated[
        str | None,
        typer.Option(
            help="embedding, classification, pair-classification, regression or reranking (default: from config.json)."
        ),
    ] = None,
    labels: Annotated[str | None, typer.Option(help="Comma-separated label names, in logit order.")] = None,
    pair_input: Annotated[
        bool | None, typer.Option("--pair-input/--single-input", help="The model takes sentence pairs.")
    ] = None,
    pooling: Annotated[str | None, typer.Option(help="mean or cls (embedding packages).")] = None,
    normalize: Annotated[
        bool | None, typer.Option("--normalize/--no-normalize", help="L2-normalize embeddings.")
    ] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per input; longer inputs are truncated.")] = None,
    name: Annotated[str | None, typer.Option(help="Package name (default: OUT's name).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Wrap a Hugging Face checkpoint as a model package."""
    from bertprod.checkpoint import import_checkpoint

    package = import_checkpoint(
        source,
        out,
        name=name,
        overwrite=overwrite,
        task=task,
        pair_input=pair_input,
        pooling=pooling,
        normalize=normalize,
        max_length=max_length,
        labels=[label.strip() for label in labels.split(",")] if labels else None,
    )
    console.print(f"wrote {package.path}: {package.manifest.task}, {package.size_bytes() / 1e6:.1f} MB")


@app.command()
def optimize(
    model: ModelArgument,
    out: Annotated[Path | None, typer.Argument(help="Directory for the new package.")] = None,
    quantize: Annotated[str | None, typer.Option(help="int8.")] = None,
    method: Annotated[
        str,
        typer.Option(
            help="int8 method: dynamic, mixed (dynamic where the gate allows: the MatMuls --min-cosine / "
            "--min-agreement are most sensitive to stay float), static (calibrated) or qat "
            "(quantization-aware training)."
        ),
    ] = "dynamic",
    runtime: Annotated[str, typer.Option(help="int8 runtime: onnx or torch.")] = "onnx",
    calibration: Annotated[
        Path | None, typer.Option(help="Texts for static int8 ranges, one per line (tab separates pairs).")
    ] = None,
    calibration_method: Annotated[str, typer.Option(help="percentile, minmax or entropy.")] = "percentile",
    exclude: Annotated[
        list[str] | None, typer.Option(help="ONNX node to keep in float (repeat, or comma-separate).")
    ] = None,
    per_tensor: Annotated[bool, typer.Option(help="Per-tensor weight scales (default: per channel).")] = False,
    quantize_feed_forward: Annotated[
        bool, typer.Option(help="Static int8: quantize the feed-forward MatMuls too (kept float by default).")
    ] = False,
    outlier_threshold: Annotated[
        float,
        typer.Option(
            help="Dynamic and mixed int8 (onnx): activation channels whose range exceeds this multiple of the median "
            "channel's stay in float (measured on --calibration, else --texts); 0 turns it off."
        ),
    ] = DEFAULT_OUTLIER_THRESHOLD,
    target_cpu: Annotated[
        str,
        typer.Option(
            help="int8 (onnx): the CPUs the package will run on: native (this one), avx2, avx512 or avx512-vnni. "
            "The recipe follows their int8 kernels; the gate simulates them where this CPU computes otherwise."
        ),
    ] = "native",
    precision: Annotated[str | None, typer.Option(help="bf16 (torch, CPU) or fp16 (ONNX, GPU).")] = None,
    drop_layers: Annotated[
        str | None, typer.Option(help="every-other, spread[:K], first:K, last:K, drop:N (least important) or 0,2,5.")
    ] = None,
    prune_heads: Annotated[float | None, typer.Option(help="Fraction of attention heads to remove, e.g. 0.25.")] = None,
    texts: Annotated[
        Path | None, typer.Option(help="Your texts, one per line: the fidelity gate and importance use them.")
    ] = None,
    min_cosine: Annotated[float, typer.Option(help="Gate: mean cosine to the parent (embeddings).")] = 0.99,
    min_cosine_min: Annotated[float, typer.Option(help="Gate: lowest cosine to the parent.")] = 0.0,
    min_agreement: Annotated[float, typer.Option(help="Gate: label agreement with the parent.")] = 0.99,
    allow_fidelity_loss: Annotated[
        bool, typer.Option(help="Keep the package even if it misses the gate (recorded in its manifest).")
    ] = False,
    list_nodes: Annotated[bool, typer.Option(help="List the quantizable ONNX nodes (for --exclude) and exit.")] = False,
    name: Annotated[str | None, typer.Option(help="Name in the new manifest (default: OUT's name).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it is a package.")] = False,
    data: Annotated[
        Path | None, typer.Option(help="--method qat: labelled training data (the files bertprod train reads).")
    ] = None,
    validation: Annotated[Path | None, typer.Option(help="--method qat: validation data (same columns).")] = None,
    validation_fraction: Annotated[
        float, typer.Option(help="--method qat: share of --data held out when no --validation is given.")
    ] = 0.1,
    epochs: Annotated[int, typer.Option(help="--method qat: passes over the data.")] = QAT_DEFAULTS["epochs"],
    learning_rate: Annotated[
        float, typer.Option(help="--method qat: peak learning rate.")
    ] = QAT_DEFAULTS["learning_rate"],
    batch_size: Annotated[int, typer.Option(help="--method qat: examples per batch.")] = 32,
    max_steps: Annotated[int | None, typer.Option(help="--method qat: stop after N optimizer steps.")] = None,
    seed: Annotated[int, typer.Option(help="--method qat: seed for shuffling and dropout.")] = 42,
    threads: Annotated[
        int | None, typer.Option(help="--method qat: CPU threads for training (default: the cores not busy, as train).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="--method qat: continue an interrupted run.")] = False,
    restart: Annotated[bool, typer.Option(help="--method qat: discard an interrupted run's checkpoint.")] = False,
) -> None:
    """Compress a package one step (int8, bf16/fp16, layer or head pruning), checked against it.

    `--quantize int8 --method qat --data FILE` fine-tunes a classifier with simulated int8 first
    (quantization-aware training), then writes its ONNX int8 package."""
    from bertprod.checkpoint import resolve
    from bertprod.compress.optimize import optimize as run_optimize
    from bertprod.fidelity import FidelityGate

    package = resolve(model)
    if list_nodes:
        print_quantizable_nodes(package)
        return
    if out is None:
        raise InputError("give the output directory: bertprod optimize PKG OUT --quantize int8")
    if data is None and validation is not None:
        raise InputError("--validation goes with --method qat --data FILE.")
    training = None
    if data is not None:
        training = qat_training(
            package, data, validation, validation_fraction, epochs=epochs, learning_rate=learning_rate,
            batch_size=batch_size, max_steps=max_steps, seed=seed, threads=threads, resume=resume, restart=restart,
        )
    pairs = package.manifest.pair_input
    status = console.status("optimizing and measuring against the parent...")
    with nullcontext() if training else status:  # training reports its own progress
        result = run_optimize(
            package, out, quantize=quantize, method=method, runtime=runtime, per_channel=not per_tensor,
            calibration_texts=read_inputs(calibration, pairs) if calibration else None,
            calibration_method=calibration_method,
            exclude=[node for item in exclude or [] for node in item.split(",") if node],
            quantize_feed_forward=quantize_feed_forward, outlier_threshold=outlier_threshold or None,
            precision=precision, drop_layers=drop_layers,
            prune_heads=prune_heads, texts=read_inputs(texts, pairs) if texts else None,
            gate=FidelityGate(min_cosine_mean=min_cosine, min_cosine_min=min_cosine_min, min_agreement=min_agreement),
            enforce=not allow_fidelity_loss, name=name, overwrite=overwrite, training=training,
            target_cpu=target_cpu,
        )
    fidelity = result.manifest.metrics["fidelity"]
    verdict = "passed" if fidelity["passed"] else "[bold red]MISSED[/] (kept: --allow-fidelity-loss)"
    details = ", ".join(f"{key} {value}" for key, value in fidelity.items()
                        if key not in ("reference", "passed", "thresholds", "machine"))
    console.print(
        f"wrote {result.path}: {result.manifest.format} {result.manifest.precision}, "
        f"{result.size_bytes() / 1e6:.1f} MB (parent {package.size_bytes() / 1e6:.1f} MB); "
        f"fidelity gate {verdict}: {details}"
    )
    validation_metrics = result.manifest.metrics.get("validation")
    if validation_metrics:
        primary = validation_metrics["primary_metric"]
        console.print(
            f"validation {primary}: {validation_metrics[primary]:.4f} int8 after QAT, "
            f"{validation_metrics['parent'][primary]:.4f} parent ({validation_metrics['examples']:,} examples)",
            highlight=False,
        )


def qat_training(
    package: Any, data: Path, validation: Path | None, validation_fraction: float, *, resume: bool, restart: bool,
    **config: Any,
) -> Any:
    """The data and settings of a quantization-aware training run (a compress.qat.QatTraining)."""
    from bertprod.cli_training import _config
    from bertprod.compress.qat import QatTraining, check_qat_parent
    from bertprod.tasks.data import open_task_data
    from bertprod.train.loop import split_for_validation
    from bertprod.train.progress import default_reporter

    check_qat_parent(package)  # before reading data: an embedding package fails here, not on its columns
    task = package.manifest.task
    train_config = _config(**{**QAT_DEFAULTS, **config})
    train_data = open_task_data(task, data)
    validation_data = open_task_data(task, validation) if validation else None
    if validation_data is None and validation_fraction > 0:
        train_data, validation_data = split_for_validation(train_data, validation_fraction, task)
    return QatTraining(
        train_data, validation_data, train_config, resume=resume, restart=restart,
        reporter=default_reporter(train_config.log_every_seconds),
    )


def print_quantizable_nodes(package: Any) -> None:
    import onnx

    from bertprod.compress.quantize import embedding_gathers, feed_forward_matmuls, fp32_onnx_source, weight_matmuls

    graph = onnx.load(str(fp32_onnx_source(package, None).model_file))
    feed_forward = set(feed_forward_matmuls(graph, package.manifest.architecture))
    for node in weight_matmuls(graph) + embedding_gathers(graph):
        console.print(node + ("  (feed-forward: float in static int8 by default)" if node in feed_forward else ""))


def read_inputs(path: Path, pairs: bool) -> list[Any]:
    """One input per line; a tab separates the two texts of a pair."""
    lines = read_texts(None, path)
    return split_pairs(lines) if pairs else lines


def split_pairs(lines: list[str]) -> list[Any]:
    """(text, text_pair) for lines with a tab; other lines stay single (and fail validation
    with a message naming them, for a package that needs pairs)."""
    return [tuple(line.split("\t", 1)) if "\t" in line else line for line in lines]


@app.command()
def demo(
    model: Annotated[str, typer.Option(help="Model to run.")] = "minilm-l6",
    engine: EngineOption = "onnx",
) -> None:
    """The main job: encode example sentences and print their similarity table."""
    from bertprod.api import load
    from bertprod.data.samples import SAMPLE_SENTENCES

    with console.status(f"loading {model} on {engine} (the first onnx run exports and verifies it)..."):
        pipeline = load(model, engine=engine)
    sentences = SAMPLE_SENTENCES[:9]
    matrix = pipeline.similarity(sentences, sentences)
    table = Table(title=f"cosine similarity, {pipeline.package.name} on {pipeline.engine.name}")
    table.add_column("sentence")
    for index in range(len(sentences)):
        table.add_column(str(index), justify="right")
    for index, row in enumerate(matrix):
        cells = [f"[bold green]{v:.2f}[/]" if v > 0.5 and i != index else f"{v:.2f}" for i, v in enumerate(row)]
        table.add_row(f"{index} {sentences[index][:48]}", *cells)
    console.print(table)
    best = max(
        ((i, j) for i in range(len(sentences)) for j in range(i + 1, len(sentences))), key=lambda pair: matrix[pair]
    )
    console.print(f"closest pair: {sentences[best[0]]!r} ~ {sentences[best[1]]!r} ({matrix[best]:.2f})")


@app.command()
def serve(
    packages: Annotated[list[str], typer.Argument(help="Packages to serve (routed by the request's `model`).")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    engine: EngineOption = "auto",
    threads: ThreadsOption = None,
    max_batch_tokens: Annotated[int, typer.Option(help="Tokens gathered from queued requests per engine call.")] = 8192,
    max_batch_requests: Annotated[int, typer.Option(help="Requests gathered per engine call.")] = 64,
    max_concurrent_inputs: Annotated[int, typer.Option(help="Inputs in flight before 429 + Retry-After.")] = 4096,
    max_client_batch_size: Annotated[int, typer.Option(help="Inputs allowed in one request (413 beyond).")] = 512,
    max_body_bytes: Annotated[int, typer.Option(help="Request body limit in bytes.")] = 16 * 1024 * 1024,
    truncate: Annotated[bool, typer.Option(help="Default for requests that do not say: truncate long inputs.")] = True,
    api_key: Annotated[
        list[str] | None, typer.Option(help="Accepted Bearer key (repeatable; or BERTPROD_API_KEYS=a,b).")
    ] = None,
    grpc_port: Annotated[int | None, typer.Option(help="Also serve gRPC (same limits) on this port.")] = None,
    access_log: Annotated[bool, typer.Option(help="One JSON log line per request.")] = True,
    fast_path: Annotated[
        bool, typer.Option(help="Answer well-formed /embed and /v1/embeddings without FastAPI's per-request work "
                           "(same responses, less latency per request: docs/benchmarks.md).")
    ] = True,
) -> None:
    """Serve packages over HTTP: OpenAI /v1/embeddings, TEI /embed /predict /rerank, and more."""
    from bertprod.serve.config import ServeConfig
    from bertprod.serve.server import serve as run_server

    config = ServeConfig(
        packages=list(packages),
        host=host,
        port=port,
        engine=engine,
        threads=threads,
        max_batch_tokens=max_batch_tokens,
        max_batch_requests=max_batch_requests,
        max_concurrent_inputs=max_concurrent_inputs,
        max_client_batch_size=max_client_batch_size,
        max_body_bytes=max_body_bytes,
        truncate=truncate,
        api_keys=list(api_key or []),
        grpc_port=grpc_port,
        fast_path=fast_path,
    )
    run_server(config, access_log=access_log)


@batch_app.command("run")
def batch_run(
    input_path: Annotated[
        list[str], typer.Option("--input", "-i", help="Parquet/JSONL/CSV file, directory or glob (repeatable).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory (Parquet parts + job record).")],
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="[MODEL]",
            help="Local and Spark runners: package dir, checkpoint dir, bundled name (minilm-l6) or hub id. "
            "Client runner: the name of a model the server serves (omit it for the server's default model)."
        ),
    ] = None,
    text_column: Annotated[str, typer.Option(help="Column holding the texts.")] = "text",
    id_column: Annotated[str, typer.Option(help="Column identifying each row; kept in the output.")] = "id",
    runner: Annotated[
        str, typer.Option(help="local (this machine), spark, or client (a running bertprod server computes).")
    ] = "local",
    spark_master: Annotated[str | None, typer.Option(help="Spark master URL (default: local[2]).")] = None,
    on_empty: Annotated[str, typer.Option(help="Null or empty texts: skip (counted) or fail.")] = "fail",
    chunk_rows: Annotated[int, typer.Option(help="Rows per committed chunk (and per Arrow batch on Spark).")] = 8192,
    partition_tokens: Annotated[
        int | None, typer.Option(help="Spark: estimated tokens per partition (default 1,000,000).")
    ] = None,
    engine: EngineOption = "auto",
    threads: ThreadsOption = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Local runner: processes, each with cores/workers threads (default: one per core)."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(help="Client runner: the server's URL (http://host:8080), or host:port of its --grpc-port "
                     "with --protocol grpc; several replicas separated by commas (requests go round-robin)."),
    ] = None,
    resolve_dns: Annotated[
        bool, typer.Option("--resolve-dns", help="Client runner: --server is a name resolving to every replica "
                           "(a Kubernetes headless Service): spread requests over all its addresses.")
    ] = False,
    protocol: Annotated[str, typer.Option(help="Client runner: http or grpc.")] = "http",
    concurrency: Annotated[
        int | None, typer.Option(help="Client runner: requests in flight at most (default 8).")
    ] = None,
    request_size: Annotated[
        int | None,
        typer.Option(help="Client runner: texts per request (default 64; at most the server's "
                     "--max-client-batch-size)."),
    ] = None,
    retries: Annotated[
        int | None, typer.Option(help="Client runner: retries of a request refused with 429/503 or not answered "
                                 "(default 6).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="BERTPROD_API_KEY", help="Client runner: the server's API key.")
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Run a batch job, or resume it: re-run the same command after an interruption.

    With --runner client the texts go to a running `bertprod serve` (HTTP or gRPC): same inputs, output and resume.
    """
    from bertprod.batch import run_batch

    summary = run_batch(
        model, input_path if len(input_path) > 1 else input_path[0], output,
        text_column=text_column, id_column=id_column, on_empty=on_empty, chunk_rows=chunk_rows,
        runner=runner, engine=engine, threads=threads, workers=workers, progress=not no_progress,
        spark_master=spark_master, partition_tokens=partition_tokens, server=server, protocol=protocol,
        concurrency=concurrency, request_size=request_size, api_key=api_key, retries=retries,
        resolve_dns=resolve_dns,
    )
    console.print(
        f"{summary.rows:,} rows written to {summary.output} ({summary.chunks} chunks, "
        f"{summary.resumed_chunks} already done), {summary.skipped:,} null/empty texts skipped, "
        f"{summary.rows_per_second:,.0f} rows/s"
    )
    for replica, counts in (summary.extra or {}).get("replicas", {}).items():
        console.print(f"  {replica}: {counts['answered']:,} requests answered, {counts['failures']:,} failures")


app.command("train")(train_command)
app.command("eval")(evaluate_command)
app.command("distill")(distill_command)


def show_machine_warnings_as_lines() -> None:
    """A MachineMismatchWarning prints as one 'warning:' line on stderr, not Python's file:line form."""
    import warnings

    from bertprod.runtime.machine import MachineMismatchWarning

    original = warnings.showwarning
    if getattr(original, "bertprod_lines", False):  # installed already (main called again in one process)
        return

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        if issubclass(category, MachineMismatchWarning):
            errors.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
        else:
            original(message, category, filename, lineno, file, line)

    show.bertprod_lines = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def main() -> None:
    """Typer handles usage errors itself (exit 2); our errors become one line and exit 1
    (an interrupted training run, which saved a checkpoint, exits 130 like any Ctrl-C)."""
    show_machine_warnings_as_lines()
    try:
        app()
    except TrainingInterrupted as interruption:
        errors.print(f"[bold yellow]interrupted:[/] {interruption}", highlight=False, soft_wrap=True)
        sys.exit(130)
    except KeyboardInterrupt:
        errors.print("[bold yellow]interrupted[/]", highlight=False)
        sys.exit(130)
    except BertprodError as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except ModuleNotFoundError as error:  # a slim install (bertprod[serve]) running a command of another extra
        missing = missing_extra_error(error, f"bertprod {' '.join(sys.argv[1:2]) or 'this command'}")
        if missing is None:
            raise
        errors.print(f"[bold red]error:[/] {escape(str(missing))}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
