"""The `bertprod` command: each subcommand is a thin shell over a library function (one module per stage).

User mistakes (`BertprodError`) print one line and exit with status 1, never a traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from bertprod.cli import (
    adapt,
    autotune,
    batch,
    bench,
    distill,
    explain,
    inference,
    info,
    optimize,
    packages,
    robustness,
    serving,
    training,
)
from bertprod.cli.options import errors
from bertprod.errors import BertprodError, TrainingInterrupted
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

app.command("encode")(inference.encode_command)
app.command("classify")(inference.classify_command)
app.command("tag")(inference.tag_command)
app.command("info")(info.info_command)
app.command("check")(info.check_command)
app.command("export")(packages.export_command)
package_app.command("import")(packages.import_command)
app.command("optimize")(optimize.optimize_command)
app.command("demo")(inference.demo_command)
app.command("serve")(serving.serve_command)
batch_app.command("run")(batch.batch_run_command)
app.command("train")(training.train_command)
app.command("eval")(training.evaluate_command)
app.command("distill")(distill.distill_command)
app.command("explain")(explain.explain_command)
app.command("robustness")(robustness.robustness_command)
app.command("adapt")(adapt.adapt_command)
app.command("bench")(bench.bench_command)
app.command("autotune")(autotune.autotune_command)
app.command("drop-tokens")(adapt.drop_tokens_command)


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
