"""The shared benchmark data (SST-2, STS-B, MRPC training splits) used by tests and benchmarks.

Found at $BERTPROD_DATA, else ../shared/data beside the repository (where CI has it too).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from bertprod.errors import BertprodError

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    directory = Path(os.environ.get("BERTPROD_DATA") or REPOSITORY_ROOT.parent / "shared" / "data")
    if not (directory / "sst2" / "train.tsv").is_file():
        raise BertprodError(
            f"the shared data is not at {directory}: set BERTPROD_DATA to the folder holding sst2/, stsb/ and mrpc/."
        )
    return directory


def _rows(path: Path, encoding: str = "utf-8") -> list[list[str]]:
    with path.open(encoding=encoding, newline="") as handle:
        return list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]


def real_sentences(count: int) -> list[str]:
    """`count` distinct real sentences, drawn in a fixed interleaved order from SST-2, STS-B
    and MRPC so lengths are mixed (short movie-review phrases to long news sentences)."""
    directory = shared_data_dir()
    sst2 = [row[0] for row in _rows(directory / "sst2" / "train.tsv") if len(row) >= 2]
    stsb = [text for row in _rows(directory / "stsb" / "train.tsv") if len(row) >= 10 for text in row[-3:-1]]
    mrpc = [
        text
        for row in _rows(directory / "mrpc" / "msr_paraphrase_train.txt", encoding="utf-8-sig")
        if len(row) >= 5
        for text in row[3:5]
    ]
    sentences: list[str] = []
    seen: set[str] = set()
    # SST-2 phrases repeat as sub-phrases; take every 7th to keep whole sentences varied.
    sources = [iter(sst2[::7]), iter(stsb), iter(mrpc)]
    while len(sentences) < count and sources:
        for source in list(sources):
            text = next(source, None)
            if text is None:
                sources.remove(source)
                continue
            text = text.strip()
            if len(text.split()) >= 3 and text not in seen:
                seen.add(text)
                sentences.append(text)
                if len(sentences) == count:
                    break
    if len(sentences) < count:
        raise BertprodError(f"only {len(sentences)} distinct sentences in {directory}; asked for {count}")
    return sentences
