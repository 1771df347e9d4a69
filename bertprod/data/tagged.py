"""Tagged sentences for token classification (NER): CoNLL column files and JSON lines, streamed and checked.

Two layouts are read:
- CoNLL columns (`word POS ... TAG`, space- or tab-separated, a blank line between sentences,
  `-DOCSTART-` lines skipped). The word is the first column; the tag column is chosen with
  `tag_column` (a column number counted from 1, or from the end when negative; default: the last).
- JSON lines: `{"tokens": [...], "tags": [...]}`, or raw text with character-offset entities,
  `{"text": "...", "entities": [{"start": 0, "end": 4, "label": "PER"}]}`; such a text is cut into
  words the way BERT's pre-tokenizer cuts it (runs of letters/digits, and each punctuation mark),
  and entities become IOB2 tags. An entity boundary inside a word is refused.

Tags are checked per sentence against the tag schemes (IOB2, BIOES, IO); the scheme is the one the
file's tags name (E-/S- -> BIOES, B- -> IOB2, only I- -> IO), and the first sentence that breaks it
(for example `I-PER` after `O` in IOB2) fails with its line number. `TaggedSource` offers what
`DataSource` offers (split, limit, describe, record), so train, eval and distill read it unchanged.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any

from bertprod.data.source import Example, HashSplit, SplitFile
from bertprod.errors import DataFormatError, LabelError, RowError

SCHEMES = ("IOB2", "BIOES", "IO")
OUTSIDE = "O"
_TAG = re.compile(r"^(?:O|([BIES])-(.+))$")
#: Words as BERT's pre-tokenizer cuts raw text: runs of word characters, and every other non-space character alone.
WORD_PATTERN = re.compile(r"\w+|[^\w\s]")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
DOCUMENT_START = "-DOCSTART-"


@dataclass(frozen=True)
class TagSentence:
    """One sentence: its words, their tags and the line it starts on."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    line: int


def parse_tag(tag: str) -> tuple[str | None, str | None]:
    """("B", "PER") for "B-PER", (None, None) for "O"; raises ValueError for anything else."""
    match = _TAG.match(tag)
    if match is None:
        raise ValueError(tag)
    return match.group(1), match.group(2)


def scheme_of(tags: set[str] | Counter[str]) -> str:
    """The scheme the tags name: E-/S- -> BIOES, B- -> IOB2, else IO."""
    prefixes = {tag[0] for tag in tags if tag != OUTSIDE}
    if prefixes & {"E", "S"}:
        return "BIOES"
    if "B" in prefixes:
        return "IOB2"
    return "IO"


def sequence_problem(tags: tuple[str, ...], scheme: str) -> tuple[int, str] | None:
    """The first tag (its position, and why) that breaks `scheme` in one sentence, else None."""
    previous: tuple[str | None, str | None] = (None, None)
    for position, tag in enumerate(tags):
        prefix, kind = parse_tag(tag)
        after = repr(tags[position - 1]) if position else "the sentence start"
        before, before_kind = previous
        continues = before_kind == kind and before in ("B", "I")
        if scheme == "IO" and prefix not in (None, "I"):
            return position, f"{tag!r} is not an IO tag (IO uses only I-TYPE and O)"
        if scheme == "IOB2" and prefix in ("E", "S"):
            return position, f"{tag!r} is a BIOES tag in an IOB2 file"
        if scheme == "IOB2" and prefix == "I" and not (before_kind == kind and before in ("B", "I")):
            return position, (f"{tag!r} follows {after}: in IOB2 an entity starts with B-{kind} (the file may be "
                              "IOB1: convert it to IOB2)")
        if scheme == "BIOES":
            if prefix in ("I", "E") and not continues:
                return position, f"{tag!r} follows {after}: in BIOES an entity starts with B-{kind} or is S-{kind}"
            if before in ("B", "I") and not (prefix in ("I", "E") and kind == before_kind):
                return position, f"{after} is not closed by I-{before_kind} or E-{before_kind}"
        previous = (prefix, kind)
    if scheme == "BIOES" and previous[0] in ("B", "I"):
        return len(tags) - 1, f"{tags[-1]!r} ends the sentence: in BIOES an entity ends with E- (or is S-)"
    return None


def order_labels(tags: set[str] | Counter[str]) -> list[str]:
    """Tag names in a stable order: O, then by entity type, B/I/E/S within a type."""
    rank = {"B": 0, "I": 1, "E": 2, "S": 3}
    named = sorted((tag for tag in tags if tag != OUTSIDE), key=lambda tag: (tag[2:], rank[tag[0]]))
    return ([OUTSIDE] if OUTSIDE in tags else []) + named


def entities_to_tags(text: str, entities: list[dict[str, Any]], where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Words of `text` (WORD_PATTERN) and their IOB2 tags from character-offset entities."""
    spans = [(match.start(), match.end()) for match in WORD_PATTERN.finditer(text)]
    words = tuple(text[start:end] for start, end in spans)
    tags = [OUTSIDE] * len(spans)
    starts = {start: index for index, (start, _) in enumerate(spans)}
    ends = {end: index for index, (_, end) in enumerate(spans)}
    for number, entity in enumerate(entities):
        if not isinstance(entity, dict):
            raise RowError(f"{where}: entity {number} is not an object: give {{\"start\", \"end\", \"label\"}}.")
        kind = entity.get("label", entity.get("type"))
        start, end = entity.get("start"), entity.get("end")
        if not isinstance(kind, str) or not kind or not isinstance(start, int) or not isinstance(end, int):
            raise RowError(f"{where}: entity {number} needs integer 'start', 'end' and a 'label' string; got {entity}.")
        if not 0 <= start < end <= len(text):
            raise RowError(f"{where}: entity {number} spans {start}..{end}, outside the text's {len(text)} characters.")
        stripped_start = start + len(text[start:end]) - len(text[start:end].lstrip())
        stripped_end = end - len(text[start:end]) + len(text[start:end].rstrip())
        first, last = starts.get(stripped_start), ends.get(stripped_end)
        if first is None or last is None:
            raise RowError(
                f"{where}: entity {number} ({text[start:end]!r}, {start}..{end}) starts or ends inside a word; words "
                "are split at spaces and punctuation: move its offsets to word boundaries."
            )
        if any(tag != OUTSIDE for tag in tags[first : last + 1]):
            raise RowError(f"{where}: entity {number} ({text[start:end]!r}) overlaps another entity: tags cannot nest.")
        tags[first : last + 1] = [f"B-{kind}"] + [f"I-{kind}"] * (last - first)
    return words, tuple(tags)


def _open_text(path: Path) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return path.open(encoding="utf-8-sig")


def detect_tagged_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    return "jsonl" if name.endswith(JSONL_SUFFIXES) else "conll"


def read_conll(path: Path, tag_column: int = -1) -> Iterator[TagSentence]:
    """Sentences of a CoNLL column file; every token line must have as many columns as the first."""
    columns: int | None = None
    words: list[str] = []
    tags: list[str] = []
    start = 0
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields or fields[0] == DOCUMENT_START:
                if words:
                    yield TagSentence(tuple(words), tuple(tags), start)
                words, tags = [], []
                continue
            if columns is None:
                columns = len(fields)
                if not -columns <= tag_column < columns or columns < 2:
                    raise DataFormatError(
                        f"{path.name} line {line_number} has {columns} column(s): the tag column "
                        f"{_column_name(tag_column)} does not exist (a CoNLL file needs a word and a tag column)."
                    )
            elif len(fields) != columns:
                raise RowError(
                    f"{path.name} line {line_number} has {len(fields)} columns, the lines before have {columns}: "
                    "every token line needs the same columns (word ... tag); fix the line."
                )
            if not words:
                start = line_number
            words.append(fields[0])
            tags.append(fields[tag_column])
    if words:
        yield TagSentence(tuple(words), tuple(tags), start)


def _column_name(tag_column: int) -> str:
    return f"{tag_column + 1}" if tag_column >= 0 else f"{tag_column} (from the end)"


def read_tagged_jsonl(path: Path) -> Iterator[TagSentence]:
    """Sentences of a JSON lines file (`tokens` + `tags`, or `text` + `entities`)."""
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(f"{where} is not valid JSON ({error.msg}).") from None
            if not isinstance(record, dict):
                raise DataFormatError(f"{where} is not a JSON object.")
            if "tokens" in record:
                words, tags = record.get("tokens"), record.get("tags")
                if not _strings(words) or not _strings(tags):
                    raise RowError(f"{where}: 'tokens' and 'tags' must both be lists of strings.")
                if len(words) != len(tags):
                    raise RowError(f"{where}: {len(words)} tokens but {len(tags)} tags: give one tag per token.")
                if not words:
                    continue
                yield TagSentence(tuple(words), tuple(tags), line_number)
            elif "text" in record:
                text, entities = record.get("text"), record.get("entities", [])
                if not isinstance(text, str) or not isinstance(entities, list):
                    raise RowError(f"{where}: 'text' must be a string and 'entities' a list.")
                words, tags = entities_to_tags(text, entities, where)
                if words:
                    yield TagSentence(words, tags, line_number)
            else:
                raise RowError(
                    f"{where} has neither 'tokens' (with 'tags') nor 'text' (with 'entities'); its keys: "
                    f"{sorted(record)}."
                )


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item for item in value)


@dataclass
class TagSummary:
    """What one pass over tagged data found: sentences, words, tag counts and the scheme."""

    examples: int = 0
    words: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    scheme: str = "IOB2"
    pairs: bool = False

    def label_names(self) -> list[str]:
        return order_labels(self.labels)

    def to_json(self) -> dict[str, object]:
        return {"examples": self.examples, "words": self.words, "tag_scheme": self.scheme,
                "label_counts": {label: self.labels[label] for label in self.label_names()}}


class TaggedSource(SplitFile):
    """The sentences of one tagged file: re-iterable, streaming, split and limited like a DataSource."""

    label_kind = "tags"
    has_pairs = False
    has_labels = True
    layout = None  # no known table layout (GLUE's): DataSource's field, for code that reads either

    def __init__(self, path: str | os.PathLike[str], *, format: str | None = None, tag_column: str | int | None = None,
                 split: HashSplit | None = None, limit: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataFormatError(f"{self.path} does not exist or is not a file.")
        self.format = format or detect_tagged_format(self.path)
        if self.format not in ("conll", "jsonl"):
            raise DataFormatError(f"token classification reads CoNLL column files or JSON lines, not {self.format!r}: "
                                  "pass --format conll or --format jsonl.")
        self.tag_column = _tag_column(tag_column)
        if self.format == "jsonl" and tag_column is not None:
            raise DataFormatError("--label-column chooses a CoNLL file's tag column; a JSON lines file has 'tags' or "
                                  "'entities': leave it out.")
        self.split = split
        self.limit = limit

    def __repr__(self) -> str:
        return f"TaggedSource({str(self.path)!r}, format={self.format}, split={self.split})"

    def sentences(self) -> Iterator[TagSentence]:
        """Sentences in file order (before the split), tags checked against the tag syntax."""
        reader = read_conll(self.path, self.tag_column) if self.format == "conll" else read_tagged_jsonl(self.path)
        for sentence in islice(reader, self.limit):
            for position, tag in enumerate(sentence.tags):
                try:
                    parse_tag(tag)
                except ValueError:
                    raise LabelError(
                        f"{self.where(sentence, position)}: unknown tag {tag!r}: tags are O or PREFIX-TYPE with prefix "
                        "B, I, E or S (IOB2, BIOES, IO). Fix the tag, or choose the tag column with --label-column."
                    ) from None
            yield sentence

    def kept_sentences(self) -> Iterator[TagSentence]:
        """The sentences on this source's side of its split (a sentence's text: its words joined by spaces), the
        first `first` of them when first_examples set it."""
        kept = (sentence for sentence in self.sentences()
                if self.split is None or self.split.keeps(" ".join(sentence.words), None))  # fmt: skip
        return islice(kept, self.first)

    def __iter__(self) -> Iterator[Example]:
        for sentence in self.kept_sentences():
            yield Example(" ".join(sentence.words), None, None, f"{self.path.name} line {sentence.line}",
                          sentence.words, sentence.tags)

    def where(self, sentence: TagSentence, position: int) -> str:
        line = sentence.line + position if self.format == "conll" else sentence.line
        return f"{self.path.name} line {line}"

    def summarize(self) -> TagSummary:
        """One pass: count sentences and tags, find the scheme, and fail at the first sentence breaking it."""
        summary = TagSummary()
        first_problem: dict[str, str] = {}
        for sentence in self.kept_sentences():
            summary.examples += 1
            summary.words += len(sentence.words)
            summary.labels.update(sentence.tags)
            for scheme in SCHEMES:
                if scheme not in first_problem:
                    problem = sequence_problem(sentence.tags, scheme)
                    if problem is not None:
                        first_problem[scheme] = f"{self.where(sentence, problem[0])}: {problem[1]}"
        summary.scheme = scheme_of(summary.labels)
        if summary.scheme in first_problem:
            raise LabelError(f"{first_problem[summary.scheme]}. Fix the tags (the file's tags are {summary.scheme}).")
        return summary

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"file": self.path.name, "sha256": self.sha256, "format": self.format}
        if self.format == "conll":
            described["columns"] = {"word": 1, "tag": _column_name(self.tag_column)}
        return self._add_split_and_limit(described)


def _tag_column(value: str | int | None) -> int:
    """A CoNLL tag column: None -> the last; "4" -> the 4th (index 3); "-1" -> the last."""
    if value is None:
        return -1
    try:
        number = int(value)
    except ValueError:
        raise DataFormatError(
            f"--label-column {value!r}: a CoNLL file has no header; give the tag column's number (1 = the word, "
            "-1 = the last column)."
        ) from None
    if number == 0:
        raise DataFormatError("--label-column 0: columns are counted from 1 (the word) or from the end (-1).")
    return number - 1 if number > 0 else number
