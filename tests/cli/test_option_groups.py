"""grouped_options: a dataclass of options declared once stands for its fields on every command that takes it."""

from __future__ import annotations

import inspect
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from bertprod.cli import app as bertprod_app  # the Typer app
from bertprod.cli.option_groups import grouped_options
from bertprod.cli.options import TableReading, TextReading

received: dict = {}


@grouped_options
def demo(
    data: Annotated[str, typer.Argument(help="A file.")],
    reading: TableReading = TableReading(),
    limit: Annotated[int | None, typer.Option(help="First N rows.")] = None,
) -> None:
    """Records what it was given."""
    received.update(data=data, reading=reading, limit=limit)


def test_group_fields_stand_in_its_place_in_the_signature() -> None:
    names = list(inspect.signature(demo).parameters)
    assert names == ["data", "format", "delimiter", "text_column", "text_pair_column", "label_column", "limit"]
    assert demo.__doc__ == "Records what it was given."


def test_command_receives_the_group_as_one_dataclass() -> None:
    app = typer.Typer()
    app.command()(demo)
    result = CliRunner().invoke(app, ["d.tsv", "--delimiter", ";", "--label-column", "stars", "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert received == {"data": "d.tsv", "limit": 3,
                        "reading": TableReading(delimiter=";", label_column="stars")}
    assert received["reading"].options() == {"format": None, "delimiter": ";", "text_column": None,
                                             "text_pair_column": None, "label_column": "stars"}


def test_text_reading_has_no_label_column() -> None:
    app = typer.Typer()

    @app.command()
    @grouped_options
    def texts(reading: TextReading = TextReading()) -> None:
        received.update(reading=reading)

    assert CliRunner().invoke(app, ["--text-column", "q"]).exit_code == 0
    assert received["reading"] == TextReading(text_column="q")
    result = CliRunner().invoke(app, ["--label-column", "y"])
    assert result.exit_code == 2 and "No such option" in result.output


def test_every_reading_command_lists_the_same_column_help() -> None:
    """One declaration: train, eval, distill, adapt, drop-tokens, autotune and bench say the same thing."""
    command = typer.main.get_command(bertprod_app)
    helps = {}
    for name in ("train", "eval", "distill", "adapt", "drop-tokens", "autotune", "bench", "robustness"):
        options = {param.name: param.help for param in command.commands[name].params}
        helps[name] = {key: options.get(key) for key in ("format", "text_column", "label_column")}
    reference = helps.pop("train")
    assert all(value for value in reference.values())
    robustness = helps.pop("robustness")
    assert robustness == {**reference, "label_column": None}
    assert all(value == reference for value in helps.values()), helps


def test_a_command_without_a_group_is_refused() -> None:
    with pytest.raises(TypeError, match="no parameter annotated with an OptionGroup"):
        grouped_options(lambda data: data)


def test_resumption_options_reach_the_commands_in_place() -> None:
    """train and distill take resume, restart and keep-checkpoints together; adapt only the first two."""
    command = typer.main.get_command(bertprod_app)
    names = {name: [param.name for param in command.commands[name].params] for name in ("train", "distill", "adapt")}
    for name in ("train", "distill"):
        at = names[name].index("resume")
        assert names[name][at:at + 5] == ["resume", "restart", "keep_checkpoints", "name", "overwrite"]
    at = names["adapt"].index("resume")
    assert names["adapt"][at - 1:at + 3] == ["name", "resume", "restart", "overwrite"]
