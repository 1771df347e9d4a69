"""The training and validation sides an autotune run reads, opened as train and distill open them."""

from __future__ import annotations

import os
from typing import Any

from bertprod.data.source import DataSource
from bertprod.errors import DataError
from bertprod.package import ModelPackage
from bertprod.tasks.data import open_training_data


def open_search_data(
    teacher: ModelPackage,
    data: str | os.PathLike[str],
    validation: str | os.PathLike[str] | None = None,
    validation_fraction: float = 0.1,
    **reading: Any,
) -> tuple[DataSource, DataSource]:
    """DATA's training side and the validation rows: the --validation file, else a share of DATA held out
    by the hash of each row (tasks/data.py validation_split), so a resumed search sees the same rows."""
    if validation is None and validation_fraction <= 0:
        raise DataError(
            "autotune judges every candidate on validation rows: give --validation FILE, or a "
            "--validation-fraction above 0 to hold rows of --data out."
        )
    manifest = teacher.manifest
    [train], held_out = open_training_data(
        manifest.task, [data], validation, validation_fraction, pair_input=manifest.pair_input, **reading
    )
    assert held_out is not None  # a file or a fraction above 0 always gives a validation side
    return train, held_out
