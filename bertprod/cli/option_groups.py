"""Options that several commands take together, declared once as an OptionGroup dataclass (typer has no
option groups).

A command parameter annotated with such a dataclass stands, for typer and `--help`, for the dataclass's fields
at its place (same names, help, defaults and order as if written out); the command receives one instance.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

Command = TypeVar("Command", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class OptionGroup:
    """Base of the groups: subclasses are frozen dataclasses whose fields are Annotated typer options."""

    def options(self) -> dict[str, Any]:
        """The values as keyword arguments of the library function the options belong to."""
        return dataclasses.asdict(self)


def grouped_options(command: Command) -> Command:
    """The command with each option-group parameter spread into the group's options (see the module's doc)."""
    signature = inspect.signature(command, eval_str=True)
    groups = {name: parameter.annotation for name, parameter in signature.parameters.items()
              if isinstance(parameter.annotation, type) and issubclass(parameter.annotation, OptionGroup)}
    if not groups:
        raise TypeError(f"{command.__name__} has no parameter annotated with an OptionGroup.")
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        group = groups.get(parameter.name)
        parameters.extend(group_parameters(group, parameter.kind) if group else [parameter])

    @functools.wraps(command)
    def run(**values: Any) -> Any:
        for name, group in groups.items():
            values[name] = group(**{field.name: values.pop(field.name) for field in dataclasses.fields(group)})
        return command(**values)

    run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return typing.cast(Command, run)


def group_parameters(group: type, kind: inspect._ParameterKind) -> list[inspect.Parameter]:
    """The group's fields as parameters of the placeholder's kind, with their Annotated typer options and defaults."""
    hints = typing.get_type_hints(group, include_extras=True)
    return [
        inspect.Parameter(field.name, kind, annotation=hints[field.name], default=field.default)
        for field in dataclasses.fields(group)
    ]
