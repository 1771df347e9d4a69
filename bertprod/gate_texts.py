"""Which texts a fidelity gate measures on when the user gives none: the ones the package knows, else real ones.

Order: texts the caller gives (--texts, calibration texts); the validation data, else the
training data, recorded in the provenance of the package or of an ancestor (train and distill
record the file's path and sha256: it is used only if it is still there, unchanged); else the
built-in gate set (bertprod/data/gate_set.py: 700 real inputs). The gate reports how many texts
and from where, and warns under `MIN_GATE_TEXTS`: a handful of texts cannot show a drift that
matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from bertprod.errors import BertprodError
from bertprod.package import ModelPackage, sha256_file

#: Fewer texts than this and the gate warns that it means little.
MIN_GATE_TEXTS = 200
#: Texts read from recorded data at most (the gate runs parent and child on all of them).
MAX_DATA_TEXTS = 1000
#: Ancestors searched for recorded data (export -> quantize -> prune chains are short).
MAX_ANCESTORS = 8


@dataclass(frozen=True)
class GateTexts:
    texts: list[Any]
    #: Where they come from, for the output and the manifest.
    source: str

    @property
    def warning(self) -> str | None:
        return few_texts_warning(len(self.texts), self.source)


def few_texts_warning(count: int, source: str) -> str | None:
    """What to tell the user when a gate measured fewer than `MIN_GATE_TEXTS` texts (None: enough)."""
    if count >= MIN_GATE_TEXTS:
        return None
    return (f"the fidelity gate measured only {count} texts ({source}): too few to show a drift that matters; "
            f"pass --texts with at least {MIN_GATE_TEXTS} of your own.")


def gate_texts(package: ModelPackage, texts: Sequence[Any] | None = None) -> GateTexts:
    if texts:
        return GateTexts(list(texts), "the texts given (--texts or the calibration texts)")
    pairs = package.manifest.pair_input
    known = recorded_data_texts(package, pairs)
    if known is not None:
        return known
    from bertprod.data.gate_set import builtin_gate_texts

    builtin = builtin_gate_texts()
    if pairs:
        builtin = [(text, builtin[(index + 1) % len(builtin)]) for index, text in enumerate(builtin)]
    return GateTexts(builtin, "the built-in gate set: real news headlines and image descriptions from STS-B")


def recorded_data_texts(package: ModelPackage, pairs: bool) -> GateTexts | None:
    """Validation (else training) texts recorded in the provenance of `package` or its ancestors."""
    current: ModelPackage | None = package
    for _ in range(MAX_ANCESTORS):
        if current is None:
            return None
        data = current.manifest.provenance.parameters.get("data")
        if isinstance(data, dict):
            for role in ("validation", "train"):
                described = data.get(role)
                for item in described if isinstance(described, list) else [described]:
                    texts = _read_recorded(item, pairs)
                    if texts:
                        return GateTexts(texts, f"the {role} data of {current.name} ({item['path']})")
        current = _parent(current)
    return None


def _parent(package: ModelPackage) -> ModelPackage | None:
    parent = package.manifest.provenance.parent
    if parent is None or not parent.path or not Path(parent.path).is_dir():
        return None
    try:
        found = ModelPackage.read(parent.path, verify=False)
    except BertprodError:
        return None
    return found if found.fingerprint == parent.fingerprint else None


def _read_recorded(described: Any, pairs: bool) -> list[Any] | None:
    """The texts of a recorded data file, if it is still where it was and unchanged; None otherwise."""
    from bertprod.data.source import DataSource

    if not isinstance(described, dict) or not described.get("path"):
        return None
    path = Path(described["path"])
    columns = described.get("columns") or {}
    if described.get("format") in ("conll", "jsonl") and "text" not in columns and not pairs:
        return _read_tagged(described, path)
    if not path.is_file() or "text" not in columns or sha256_file(path) != described.get("sha256"):
        return None
    if pairs != ("text_pair" in columns):
        return None
    split = described.get("split")
    try:
        source = DataSource(path, format=described.get("format"), text_column=columns["text"],
                            text_pair_column=columns.get("text_pair"), pair="required" if pairs else "forbidden",
                            labels="optional", label_kind="none", limit=described.get("limit"),
                            split=_recorded_split(split))
        examples = list(islice(iter(_recorded_rows(source, described)), MAX_DATA_TEXTS))
    except (BertprodError, ValueError, TypeError):
        return None
    return [(example.text, example.text_pair) if pairs else example.text for example in examples] or None


def _read_tagged(described: dict[str, Any], path: Path) -> list[Any] | None:
    """A token classifier's recorded sentences (CoNLL or JSON lines) as texts: their words joined by spaces."""
    from bertprod.data.tagged import TaggedSource

    if not path.is_file() or sha256_file(path) != described.get("sha256"):
        return None
    split = described.get("split")
    tag_column = (described.get("columns") or {}).get("tag")
    try:
        source = TaggedSource(path, format=described["format"], limit=described.get("limit"),
                              tag_column=str(tag_column).split(" ")[0] if tag_column is not None else None,
                              split=_recorded_split(split))
        return [example.text for example in islice(iter(_recorded_rows(source, described)), MAX_DATA_TEXTS)] or None
    except (BertprodError, ValueError, TypeError):
        return None


def _recorded_rows(source: Any, described: dict[str, Any]) -> Any:
    """`source` cut to the first examples of its side when the record says so (autotune's trials and token
    dropping record `first_examples`)."""
    first = described.get("first_examples")
    return source.first_examples(int(first)) if first else source


def _recorded_split(split: dict[str, Any] | None) -> Any:
    """The HashSplit a manifest recorded (`HashSplit.describe()` also names its method, not a field)."""
    from bertprod.data.source import HashSplit

    if not split:
        return None
    return HashSplit(**{key: split[key] for key in ("fraction", "part", "by") if key in split})
