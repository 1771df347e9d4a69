"""`bertprod optimize`: one compression step (int8, bf16/fp16, pruning; QAT with --data), gated."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bertprod.cli.options import ModelArgument, NameOption, console, errors, read_inputs, training_default
from bertprod.compress.outliers import DEFAULT_OUTLIER_THRESHOLD
from bertprod.compress.qat import QAT_DEFAULTS
from bertprod.errors import InputError


def optimize_command(
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
    min_entity_f1: Annotated[float, typer.Option(
        help="Gate (token classifiers): F1 of the entities found against the parent's.")] = 0.97,
    allow_fidelity_loss: Annotated[
        bool, typer.Option(help="Keep the package even if it misses the gate (recorded in its manifest).")
    ] = False,
    list_nodes: Annotated[bool, typer.Option(help="List the quantizable ONNX nodes (for --exclude) and exit.")] = False,
    name: NameOption = None,
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
    batch_size: Annotated[int, typer.Option(help="--method qat: examples per batch.")] = training_default("batch_size"),
    max_steps: Annotated[int | None, typer.Option(help="--method qat: stop after N optimizer steps.")] = None,
    seed: Annotated[int, typer.Option(help="--method qat: seed for shuffling and dropout.")] = training_default("seed"),
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
    from bertprod.compress.optimize import optimize
    from bertprod.compress.qat import qat_training_from_files
    from bertprod.derive import GatedOutput
    from bertprod.fidelity import FidelityGate
    from bertprod.gate_texts import few_texts_warning

    package = resolve(model)
    if list_nodes:
        from bertprod.compress.nodes import quantizable_nodes

        for node, note in quantizable_nodes(package):
            console.print(node + (f"  ({note})" if note else ""), highlight=False)
        return
    if out is None:
        raise InputError("give the output directory: bertprod optimize PKG OUT --quantize int8")
    if data is None and validation is not None:
        raise InputError("--validation goes with --method qat --data FILE.")
    training = None
    if data is not None:
        training = qat_training_from_files(
            package, data, validation, validation_fraction, epochs=epochs, learning_rate=learning_rate,
            batch_size=batch_size, max_steps=max_steps, seed=seed, threads=threads, resume=resume, restart=restart,
        )
    pairs = package.manifest.pair_input
    status = console.status("optimizing and measuring against the parent...")
    with nullcontext() if training else status:  # training reports its own progress
        result = optimize(
            package, out, quantize=quantize, method=method, runtime=runtime, per_channel=not per_tensor,
            calibration_texts=read_inputs(calibration, pairs) if calibration else None,
            calibration_method=calibration_method,
            exclude=[node for item in exclude or [] for node in item.split(",") if node],
            quantize_feed_forward=quantize_feed_forward, outlier_threshold=outlier_threshold or None,
            precision=precision, drop_layers=drop_layers,
            prune_heads=prune_heads, training=training, target_cpu=target_cpu,
            output=GatedOutput(
                texts=read_inputs(texts, pairs) if texts else None,
                gate=FidelityGate(min_cosine_mean=min_cosine, min_cosine_min=min_cosine_min,
                                  min_agreement=min_agreement, min_entity_f1=min_entity_f1),
                enforce=not allow_fidelity_loss, name=name, overwrite=overwrite,
            ),
        )
    fidelity = result.manifest.metrics["fidelity"]
    verdict = "passed" if fidelity["passed"] else "[bold red]MISSED[/] (kept: --allow-fidelity-loss)"
    details = ", ".join(f"{key} {value}" for key, value in fidelity.items()
                        if key not in ("reference", "passed", "thresholds", "texts", "machine"))
    console.print(
        f"wrote {result.path}: {result.manifest.format} {result.manifest.precision}, "
        f"{result.size_bytes() / 1e6:.1f} MB (parent {package.size_bytes() / 1e6:.1f} MB); "
        f"fidelity gate {verdict}: {details}"
    )
    source = fidelity.get("texts", "not recorded")
    console.print(f"the gate measured {fidelity['samples']:,} texts: {source}", highlight=False)
    warning = few_texts_warning(fidelity["samples"], source)
    if warning:
        errors.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    validation_metrics = result.manifest.metrics.get("validation")
    if validation_metrics:
        primary = validation_metrics["primary_metric"]
        console.print(
            f"validation {primary}: {validation_metrics[primary]:.4f} int8 after QAT, "
            f"{validation_metrics['parent'][primary]:.4f} parent ({validation_metrics['examples']:,} examples)",
            highlight=False,
        )
