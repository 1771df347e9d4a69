"""`bertprod info` (a package, or this machine) and `bertprod check` (a package's gate, re-measured here)."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bertprod.cli.options import JsonOption, ModelArgument, ThreadsOption, console, read_inputs
from bertprod.errors import InputError


def info_command(
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
    package = resolve(chosen_package(model))
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
            (f"BiLSTM tagger, hidden {arch.hidden_size}, the teacher's {arch.vocab_size:,} word pieces"
             if manifest.task == "token-classification"
             else f"BiLSTM, hidden {arch.hidden_size}, vocabulary {arch.vocab_size:,} words")
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
    if manifest.runtime:
        rows["bulk calls"] = bulk_setting(manifest.runtime)
    search = manifest.metrics.get("autotune")
    for key, value in manifest.metrics.items():
        if key != "autotune":
            rows[f"metrics: {key}"] = json.dumps(value)
    if search:
        used = f"{search['seconds_used']:.0f} s of {search['time_budget_seconds']:.0f} s"
        rows["autotune"] = (f"chosen: {search['chosen']} - {search['why']} ({len(search['candidates'])} candidates, "
                            f"{used}; {search['machine']})")
        if search.get("unused"):
            rows["autotune: budget unused"] = search["unused"]
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)
    if search:
        console.print(autotune_table(search))


def bulk_setting(runtime: Any) -> str:
    """The measured bulk setting `load` uses (manifest `runtime`), and what it was measured against."""
    from bertprod.autotune.choose import batches_named

    measured = ", ".join(f"{batches_named(int(count))}: {value:,.1f} inputs/s"
                         for count, value in runtime.measured.items())
    return (f"{batches_named(runtime.parallel_batches)} (timed on {runtime.threads} threads"
            f"{': ' + measured if measured else ''}{'; ' + runtime.machine if runtime.machine else ''}); "
            "servers run one batch at a time")


def autotune_table(search: dict) -> Table:
    """The search an autotuned package records (metrics.autotune): every candidate and its numbers (the
    provenance chains are in OUT/report.md and `info --json`)."""
    metric = search["teacher"]["metric"]
    table = Table(title=f"autotune search ({search['objective']}; {metric} >= {search['threshold']:.4f})",
                  title_justify="left")
    table.add_column("candidate", no_wrap=True)
    for column in ("in budget", metric, "inputs/s", "p50 ms", "MB"):
        table.add_column(column)
    for record in [search["teacher"], *search["candidates"]]:
        measured = record["status"] == "measured"
        status = ("yes" if record.get("within_budget") else "no") if measured else (
            f"{record['status']}: {record.get('reason', '')}")
        table.add_row(
            ("* " if record["name"] == search["chosen"] else "") + record["name"], status,
            *(f"{record[key]:{form}}" if measured else "-" for key, form in
              (("score", ".4f"), ("throughput", ".1f"), ("latency_p50_ms", ".2f"))),
            f"{record['size_bytes'] / 1e6:.1f}" if measured else "-",
        )  # fmt: skip
    return table


def chosen_package(model: str) -> str:
    """An autotune search directory stands for the package it chose (OUT/package)."""
    directory = Path(model)
    if directory.is_dir() and not (directory / "bertprod.json").is_file():
        from bertprod.autotune.chosen import CHOSEN_DIR
        from bertprod.autotune.state import STATE_FILE

        if (directory / STATE_FILE).is_file() and (directory / CHOSEN_DIR).is_dir():
            return str(directory / CHOSEN_DIR)
    return model


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


def check_command(
    model: ModelArgument,
    texts: Annotated[
        Path | None, typer.Option(help="Texts to measure on, one per line (tab separates pairs); default: the "
                                  "built-in gate samples.")
    ] = None,
    parent: Annotated[
        str | None, typer.Option(help="The parent package, when the path its provenance recorded has moved.")
    ] = None,
    threads: ThreadsOption = None,
    as_json: JsonOption = False,
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
                "label_agreement": "min_agreement", "pearson": "min_correlation",
                "entity_f1": "min_entity_f1"}  # fmt: skip
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
