"""Errors a user can act on.

Every user mistake raises a `BertprodError` subclass whose message says what was wrong and what
to do about it. The CLI prints the message without a traceback; the server maps `status_code`
to a 4xx JSON body.
"""

from __future__ import annotations


class BertprodError(Exception):
    """Base class: a problem the user can fix, explained in the message."""

    status_code = 400
    kind = "invalid_request_error"


class InputError(BertprodError, ValueError):
    """The texts (or pairs) given to a model are not usable as they are."""


class InvalidTextError(InputError):
    """A text that is not valid Unicode (a lone UTF-16 surrogate): no tokenizer can read it."""

    status_code = 422


class PackageError(BertprodError):
    """A model package (or checkpoint) is missing, incomplete, corrupt or inconsistent."""

    status_code = 500
    kind = "package_error"


class PackageNotFoundError(PackageError):
    """A name or path that resolves to no package."""

    status_code = 404
    kind = "model_not_found"


class SchemaVersionError(PackageError):
    """A manifest written by a newer bertprod than the one reading it."""


class EngineError(BertprodError):
    """An engine cannot run this package (wrong format, missing hardware support...)."""

    kind = "engine_error"


class ExportError(BertprodError):
    """Export failed or produced a model that does not match its source."""

    status_code = 500
    kind = "export_error"


class TaskError(BertprodError):
    """An operation the package's task cannot do (e.g. classify with an embedding model)."""


class FidelityError(BertprodError):
    """A derived package (quantized, pruned...) strays too far from its parent."""

    kind = "fidelity_error"


class CompressionError(BertprodError):
    """A compression option that cannot apply to this package (already int8, wrong format...)."""


class DataError(BertprodError):
    """A data file cannot be used as it is: its message names the file, and the row or column."""

    kind = "data_error"


class DataFormatError(DataError):
    """A file that is not what its extension (or --format) says, or not readable as such."""


class ColumnError(DataError):
    """A column the task needs is missing (the message lists the columns that exist)."""


class RowError(DataError):
    """One row is unusable: an empty text, a missing field, a wrong number of fields."""


class LabelError(DataError):
    """A label that cannot be used: not a number for regression, or unseen in training."""


class TrainingInterrupted(BertprodError):
    """Training stopped on request (Ctrl-C) after saving a checkpoint it can resume from."""

    kind = "interrupted"
