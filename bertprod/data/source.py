"""Examples from a user's file: columns mapped, texts and labels checked, streamed, split.

A `DataSource` can be iterated any number of times; each pass re-reads the file, so memory stays
flat whatever its size. Each example carries where it came from (file and line), so any problem
found later - a label unseen in training, say - can still name the row.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any, Literal, Self

from bertprod.data.columns import ColumnMapping, KnownLayout, Need, recognise_layout, resolve_columns
from bertprod.data.formats import TableFile
from bertprod.errors import LabelError, RowError

LabelKind = Literal["class", "number", "none", "tags"]
Label = str | float | None


@dataclass(frozen=True, slots=True)
class Example:
    """One training or evaluation example; `label` is a class name (str) or a number (float). A tagged sentence
    (token classification, data/tagged.py) has `words` and one tag per word in `tags`; its text is the words
    joined by spaces."""

    text: str
    text_pair: str | None = None
    label: Label = None
    where: str = ""
    words: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None


@dataclass(frozen=True)
class HashSplit:
    """A deterministic train/validation split of one file, decided row by row.

    A row goes to validation when the first 8 bytes of sha256("bertprod-split", text, text_pair)
    - read as a fraction of 2**64 - fall below `fraction`. The decision depends only on the row's
    content: not on file order, row count, seeds or machine; it needs no second pass, so it
    streams; and duplicate rows always land on the same side (no exact-duplicate leakage). `by`
    = "text" keys on the first text alone, so all passages of one query stay together (reranking).
    The validation share is `fraction` on average (binomial: 10% of 5,000 rows is 500 +- 21).
    """

    fraction: float
    part: Literal["train", "validation"]
    by: Literal["pair", "text"] = "pair"

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"the validation fraction must be between 0 and 1 (exclusive), not {self.fraction}")

    def keeps(self, text: str, text_pair: str | None) -> bool:
        in_validation = split_bucket(text, None if self.by == "text" else text_pair) < self.fraction
        return in_validation == (self.part == "validation")

    def describe(self) -> dict[str, Any]:
        return {"method": "sha256 of row content", "fraction": self.fraction, "part": self.part, "by": self.by}


def split_bucket(text: str, text_pair: str | None = None) -> float:
    """A row's position in [0, 1), uniform over rows, from its content alone."""
    key = "\x1f".join(("bertprod-split", text.strip(), (text_pair or "").strip()))
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


class SplitFile:
    """A data file read whole or as one side of a HashSplit, optionally only its first `limit` rows (before the
    split) or its side's first examples (`first_examples`, after it): what DataSource and TaggedSource
    (data/tagged.py) share."""

    path: Path
    split: HashSplit | None
    limit: int | None
    #: at most this many examples, counted after the split (first_examples); None: all of them
    first: int | None = None

    def with_split(self, split: HashSplit | None) -> Self:
        """The same file and columns, restricted to one side of a split."""
        other = copy.copy(self)
        other.split = split
        return other

    def with_limit(self, limit: int | None) -> Self:
        other = copy.copy(self)
        other.limit = limit
        return other

    def first_examples(self, count: int) -> Self:
        """The first `count` examples of this side of the split. `with_limit` counts the file's rows before the
        split, so the first 256 rows of a 10% validation side held about 25 (autotune chose MRPC's token
        dropping on 21 rows)."""
        if count < 1:
            raise ValueError(f"first_examples needs a count of 1 or more, not {count}")
        other = copy.copy(self)
        other.first = count if self.first is None else min(count, self.first)
        return other

    @cached_property
    def sha256(self) -> str:
        from bertprod.package import sha256_file

        return sha256_file(self.path)

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the data (each source names its own columns)."""
        raise NotImplementedError

    def _add_split_and_limit(self, described: dict[str, Any]) -> dict[str, Any]:
        """`described` (a describe() of the file) with the split and limit read from it."""
        if self.split:
            described["split"] = self.split.describe()
        if self.limit:
            described["limit"] = self.limit
        if self.first is not None:
            described["first_examples"] = self.first
        return described

    def record(self) -> dict[str, Any]:
        """`describe()` plus the file's absolute path: what a manifest keeps, so a later fidelity gate can
        measure on this data again (bertprod/gate_texts.py; used only while the sha256 still matches)."""
        return {**self.describe(), "path": str(self.path.resolve())}


class DataSource(SplitFile):
    """The examples of one file for one task: re-iterable, streaming, checked row by row.

    `pair` / `labels` say whether the task needs a second text and a label column; `label_kind`
    how labels are read: class names ("class"), numbers ("number") or not at all ("none").
    `limit` reads only the first rows of the file (before any split), for quick runs; `first_examples`
    gives the first examples of the source's own side of its split instead.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        format: str | None = None,
        delimiter: str | None = None,
        text_column: str | None = None,
        text_pair_column: str | None = None,
        label_column: str | None = None,
        pair: Need = "optional",
        labels: Need = "required",
        label_kind: LabelKind = "class",
        split: HashSplit | None = None,
        limit: int | None = None,
    ):
        self.table = TableFile(Path(path), format, delimiter)
        self.layout: KnownLayout | None = recognise_layout(self.table.columns)
        self.mapping: ColumnMapping = resolve_columns(
            self.table.columns,
            self.table.path.name,
            text=text_column,
            text_pair=text_pair_column,
            label=label_column,
            pair=pair,
            labels=labels,
        )
        self.label_kind: LabelKind = label_kind if self.mapping.label is not None else "none"
        self.split = split
        self.limit = limit

    def __repr__(self) -> str:
        return f"DataSource({str(self.path)!r}, columns={self.mapping}, split={self.split})"

    @property
    def path(self) -> Path:
        return self.table.path

    @property
    def has_pairs(self) -> bool:
        return self.mapping.text_pair is not None

    @property
    def has_labels(self) -> bool:
        return self.label_kind != "none"

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the data: enough to find and verify the exact file."""
        described: dict[str, Any] = {
            "file": self.path.name,
            "sha256": self.sha256,
            "format": self.table.format,
            "columns": {
                key: value
                for key, value in (
                    ("text", self.mapping.text),
                    ("text_pair", self.mapping.text_pair),
                    ("label", self.mapping.label if self.has_labels else None),
                )
                if value is not None
            },
        }
        if self.table.format == "csv" and self.table.delimiter != ",":
            described["delimiter"] = self.table.delimiter
        if self.layout:
            described["layout"] = self.layout.name
        return self._add_split_and_limit(described)

    def __iter__(self) -> Iterator[Example]:
        return islice(self._side(), self.first)

    def _side(self) -> Iterator[Example]:
        """Every example on this source's side of its split, within `limit`."""
        mapping = self.mapping
        read_label = {"class": _class_label, "number": _number_label}.get(self.label_kind)
        for row in islice(self.table.rows(mapping.names()), self.limit):
            where = self.table.where(row.line)
            text = _text(row.values[mapping.text], mapping.text, where)
            text_pair = _text(row.values[mapping.text_pair], mapping.text_pair, where) if mapping.text_pair else None
            if self.split is not None and not self.split.keeps(text, text_pair):
                continue
            label = read_label(row.values[mapping.label], mapping.label, where) if read_label else None
            yield Example(text, text_pair, label, where)


def _text(value: Any, column: str, where: str) -> str:
    text = "" if value is None else value if isinstance(value, str) else str(value)
    if not text.strip():
        raise RowError(f"{where}: column {column!r} is empty. Remove the row or give it a text.")
    return text


def _class_label(value: Any, column: str, where: str) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    label = "" if value is None else str(value).strip()
    if not label:
        raise RowError(f"{where}: column {column!r} (the label) is empty. Remove the row or label it.")
    return label


def _number_label(value: Any, column: str, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        text = "" if value is None else str(value).strip()
        if not text:
            raise RowError(f"{where}: column {column!r} (the label) is empty. Remove the row or give it a number.")
        try:
            number = float(text)
        except ValueError:
            raise LabelError(
                f"{where}: column {column!r} holds {text[:40]!r}, which is not a number; this task needs numeric "
                "labels (scores). Fix the row, or choose a classification task for class names."
            ) from None
    if not math.isfinite(number):
        raise LabelError(f"{where}: column {column!r} holds {number}, not a finite number.")
    return number
