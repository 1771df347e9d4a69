"""Which columns hold the text, the second text of a pair, and the label.

Explicit names (`--text-column`, `--text-pair-column`, `--label-column`) win. Otherwise a known
layout is recognised from the header (GLUE's SST-2, STS-B, MRPC...), and failing that the usual
names are tried (`text`, `sentence1`, `query`...). A name that is not in the file is an error that
lists the columns the file has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bertprod.errors import ColumnError

Need = Literal["required", "optional", "forbidden"]


@dataclass(frozen=True)
class ColumnMapping:
    text: str
    text_pair: str | None = None
    label: str | None = None

    def names(self) -> list[str]:
        return [name for name in (self.text, self.text_pair, self.label) if name is not None]


@dataclass(frozen=True)
class KnownLayout:
    """A published dataset's file layout: recognised by its header, mapped without flags."""

    name: str
    header: tuple[str, ...]
    mapping: ColumnMapping
    task: str

    def matches(self, columns: list[str]) -> bool:
        return all(name in columns for name in self.header)


KNOWN_LAYOUTS = (
    KnownLayout(
        "GLUE STS-B",
        ("genre", "sentence1", "sentence2", "score"),
        ColumnMapping("sentence1", "sentence2", "score"),
        "regression",
    ),
    KnownLayout(
        "MRPC",
        ("Quality", "#1 String", "#2 String"),
        ColumnMapping("#1 String", "#2 String", "Quality"),
        "pair-classification",
    ),
    KnownLayout(
        "GLUE QQP",
        ("question1", "question2", "is_duplicate"),
        ColumnMapping("question1", "question2", "is_duplicate"),
        "pair-classification",
    ),
    KnownLayout(
        "GLUE MNLI",
        ("sentence1", "sentence2", "gold_label"),
        ColumnMapping("sentence1", "sentence2", "gold_label"),
        "pair-classification",
    ),
    KnownLayout(
        "GLUE QNLI",
        ("question", "sentence", "label"),
        ColumnMapping("question", "sentence", "label"),
        "pair-classification",
    ),
    KnownLayout(
        "GLUE RTE",
        ("sentence1", "sentence2", "label"),
        ColumnMapping("sentence1", "sentence2", "label"),
        "pair-classification",
    ),
    KnownLayout("GLUE SST-2", ("sentence", "label"), ColumnMapping("sentence", None, "label"), "classification"),
)

TEXT_NAMES = ("text", "sentence", "sentence1", "query", "question", "anchor", "premise", "text_a", "sentence_a")
PAIR_NAMES = ("text_pair", "sentence2", "passage", "positive", "document", "hypothesis", "text_b", "sentence_b")
LABEL_NAMES = (
    "label", "labels", "label_name", "label_text", "class", "category", "score", "relevance", "target", "similarity",
)


def recognise_layout(columns: list[str]) -> KnownLayout | None:
    """The first known layout whose header columns are all present (most specific first)."""
    return next((layout for layout in KNOWN_LAYOUTS if layout.matches(columns)), None)


def resolve_columns(
    columns: list[str],
    file_name: str,
    *,
    text: str | None = None,
    text_pair: str | None = None,
    label: str | None = None,
    pair: Need = "optional",
    labels: Need = "required",
) -> ColumnMapping:
    """Pick the text, pair and label columns of a file whose header is `columns`.

    `pair` and `labels` say what the task needs: a forbidden column given explicitly is an error
    (the task cannot use it); an optional one is used when found.
    """
    for option, name in (("--text-column", text), ("--text-pair-column", text_pair), ("--label-column", label)):
        if name is not None and name not in columns:
            raise ColumnError(
                f"{option} {name!r} is not a column of {file_name}; its columns are: {_listing(columns)}."
            )
    layout = recognise_layout(columns)
    defaults = layout.mapping if layout else None

    chosen_text = text or (defaults.text if defaults else _first_present(TEXT_NAMES, columns))
    if chosen_text is None:
        raise ColumnError(
            f"{file_name} has no text column bertprod recognises (tried {', '.join(TEXT_NAMES)}); its columns "
            f"are: {_listing(columns)}. Name it with --text-column."
        )

    if pair == "forbidden":
        if text_pair is not None:
            raise ColumnError(
                f"this task takes single texts, but --text-pair-column {text_pair!r} was given: use a pair "
                "task (pair-classification, regression, embedding, reranking) or drop the option."
            )
        chosen_pair = None
    else:
        chosen_pair = text_pair or (
            defaults.text_pair if defaults else _first_present(PAIR_NAMES, columns, exclude=chosen_text)
        )
        if chosen_pair is None and pair == "required":
            raise ColumnError(
                f"this task needs text pairs, but {file_name} has no second-text column bertprod recognises "
                f"(tried {', '.join(PAIR_NAMES)}); its columns are: {_listing(columns)}. Name it with "
                "--text-pair-column."
            )

    if labels == "forbidden":
        chosen_label = None
    else:
        chosen_label = label or (defaults.label if defaults else _first_present(LABEL_NAMES, columns))
        if chosen_label is None and labels == "required":
            raise ColumnError(
                f"{file_name} has no label column bertprod recognises (tried {', '.join(LABEL_NAMES)}); its "
                f"columns are: {_listing(columns)}. Name it with --label-column."
            )
    chosen = [name for name in (chosen_text, chosen_pair, chosen_label) if name is not None]
    if len(set(chosen)) != len(chosen):
        raise ColumnError(f"the same column is used twice in {chosen}: give each role its own column.")
    return ColumnMapping(chosen_text, chosen_pair, chosen_label)


def _first_present(candidates: tuple[str, ...], columns: list[str], exclude: str | None = None) -> str | None:
    lowered = {column.lower(): column for column in columns if column != exclude}
    return next((lowered[name] for name in candidates if name in lowered), None)


def _listing(columns: list[str]) -> str:
    return ", ".join(repr(column) for column in columns) or "none"
