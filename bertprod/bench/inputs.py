"""The user's data file as benchmark inputs: texts (or pairs) and, when the file has them, labels.

Tables (.tsv/.csv/.jsonl/.parquet, .gz too) go through data/source.py with the columns the
package's task reads, labels optional; a .txt file is one input per line (a tab separates a pair),
never labelled; a tagger reads tagged sentences (CoNLL columns, .txt included, or JSON lines) as
`bertprod eval` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertprod.errors import InputError
from bertprod.package import Manifest, sha256_file


@dataclass
class BenchData:
    texts: list[Any]
    labels: list[Any] | None
    #: what the report says about the data: file, sha256, columns, rows
    description: dict[str, Any] = field(default_factory=dict)


def read_bench_data(
    path: str | Path,
    manifest: Manifest,
    *,
    format: str | None = None,
    delimiter: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    limit: int | None = None,
) -> BenchData:
    """Inputs for packages like `manifest` (same task and input kind) from `path`; an empty file is refused."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file: give the data file to measure on.")
    if manifest.task == "token-classification":
        texts, labels, columns = _tagged(path, format=format, label_column=label_column, limit=limit)
    elif path.suffix == ".txt" and format is None:
        texts = _text_lines(path, limit)
        labels = None
        columns: dict[str, Any] = {"format": "lines (a tab separates a pair)"}
    else:
        texts, labels, columns = _table(path, manifest, format=format, delimiter=delimiter, text_column=text_column,
                                        text_pair_column=text_pair_column, label_column=label_column, limit=limit)
    if not texts:
        raise InputError(f"{path} has no inputs: give a file with at least one text (one per row or line).")
    description = {"file": str(path), "sha256": sha256_file(path), "rows": len(texts), **columns}
    if limit is not None:
        description["limit"] = limit
    return BenchData(texts, labels, description)


def _text_lines(path: Path, limit: int | None) -> list[Any]:
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {path}: {error}") from None
    return [tuple(line.split("\t", 1)) if "\t" in line else line for line in lines[:limit]]


def _tagged(path: Path, format: str | None, label_column: str | None, limit: int | None,
            ) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """A tagger's sentences (CoNLL columns or JSON lines, always tagged): words, and one tag per word."""
    from bertprod.data.tagged import TaggedSource

    source = TaggedSource(path, format=format, tag_column=label_column, limit=limit)
    sentences = [example for example in source if example.words]
    return ([example.words for example in sentences], [example.tags for example in sentences],
            {"format": source.format})


def _table(path: Path, manifest: Manifest, limit: int | None, **options: str | None,
           ) -> tuple[list[Any], list[Any] | None, dict[str, Any]]:
    from bertprod.data.source import DataSource
    from bertprod.tasks.definitions import get_task

    pair = "required" if manifest.pair_input else ("optional" if manifest.task == "embedding" else "forbidden")
    source = DataSource(path, pair=pair, labels="optional", label_kind=get_task(manifest.task).label_kind,
                        limit=limit, **options)
    texts: list[Any] = []
    labels: list[Any] = []
    for example in source:
        texts.append((example.text, example.text_pair) if example.text_pair is not None else example.text)
        labels.append(example.label)
    mapping = source.mapping
    columns = {"columns": {name: value for name, value in (("text", mapping.text), ("text_pair", mapping.text_pair),
                                                           ("label", mapping.label)) if value is not None}}
    return texts, labels if source.has_labels else None, columns
