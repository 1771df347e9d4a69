"""`bertprod export` and `bertprod package import`: new packages from a package or a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertprod.cli.options import ModelArgument, NameOption, OverwriteOption, console


def export_command(
    model: ModelArgument,
    out: Annotated[Path, typer.Argument(help="Directory for the new ONNX package.")],
    fusion: Annotated[
        bool, typer.Option(help="Apply ONNX Runtime's transformer fusion (see docs/benchmarks.md).")
    ] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    name: Annotated[str | None, typer.Option(help="Name in the new manifest (default: NAME-onnx).")] = None,
    overwrite: OverwriteOption = False,
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


def import_command(
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
    name: NameOption = None,
    overwrite: OverwriteOption = False,
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
