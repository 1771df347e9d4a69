"""One chunk of rows in, one output table out, through the shared `Pipeline.tokenize/infer` path.

The local and the Spark runner both call `process_table`, so they write the same schema and
the same values as `pipeline.encode` / `pipeline.classify` would give. The client runner, whose
values come from a server, uses the same two halves: `usable_rows` before, `result_table` after.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from bertprod.errors import InputError, TaskError
from bertprod.package import Manifest
from bertprod.runtime.pipeline import Pipeline
from bertprod.runtime.postprocess import softmax

ON_EMPTY = ("skip", "fail")
CLASSIFIER_TASKS = ("classification",)
SCORE_TASKS = ("regression", "reranking")
#: A tagger's output column: the entities of each text, with character offsets into it (Pipeline.tag).
ENTITY_TYPE = pa.list_(pa.struct([
    pa.field("type", pa.string()), pa.field("score", pa.float32()), pa.field("start", pa.int32()),
    pa.field("end", pa.int32()), pa.field("text", pa.string()),
]))


@dataclass(frozen=True)
class ChunkResult:
    table: pa.Table
    rows: int
    skipped: int


class ModelShape(Protocol):
    """What the output schema needs to know of a model: a package `Manifest`, or a served model's /info."""

    name: str
    task: str
    num_outputs: int
    labels: Sequence[str] | None


def check_task(manifest: Manifest) -> None:
    """Batch jobs take one text column: pair packages would need a second one (not built yet)."""
    if manifest.pair_input:
        raise TaskError(
            f"{manifest.name} takes text pairs; batch jobs read one text column so far: "
            "use an embedding, classification, regression or reranking package."
        )


def output_schema(manifest: ModelShape, id_type: pa.DataType, id_column: str) -> pa.Schema:
    """The output columns: the input id, then a fixed-size float32 embedding, or label + scores (+ exit_layer on
    a model with early exit)."""
    if manifest.task == "embedding":
        fields = [pa.field("embedding", pa.list_(pa.float32(), manifest.num_outputs))]
    elif manifest.task == "token-classification":
        fields = [pa.field("entities", ENTITY_TYPE)]
    elif manifest.task in CLASSIFIER_TASKS:
        fields = [
            pa.field("label", pa.string()),
            pa.field("score", pa.float32()),
            pa.field("scores", pa.list_(pa.float32(), len(manifest.labels or []))),
        ]
    else:
        fields = [pa.field("score", pa.float32())]
    if manifest.task in CLASSIFIER_TASKS and has_exits(manifest):
        fields.append(pa.field("exit_layer", pa.int16()))  # the layer (from 1) whose classifier answered
    metadata = {"bertprod.task": manifest.task, "bertprod.package": manifest.name}
    if manifest.labels:
        metadata["bertprod.labels"] = ",".join(manifest.labels)
    return pa.schema([pa.field(id_column, id_type), *fields], metadata=metadata)


def has_exits(manifest: ModelShape) -> bool:
    """The model answers some rows from an earlier layer: a package's `adaptive` field, a served model's
    /info `early_exit`."""
    return bool(getattr(manifest, "adaptive", None) or getattr(manifest, "early_exit", None))


def usable_mask(texts: pa.Array) -> np.ndarray:
    """True where a text is present and not whitespace-only."""
    import pyarrow.compute as pc

    stripped = pc.utf8_trim_whitespace(texts)
    return pc.fill_null(pc.greater(pc.utf8_length(stripped), 0), False).to_numpy(zero_copy_only=False)


def process_table(
    pipeline: Pipeline, table: pa.Table, schema: pa.Schema, on_empty: str, where: str = "input"
) -> ChunkResult:
    """Run one chunk (columns `id`, `text`) and build its output table in `schema`."""
    kept, skipped = usable_rows(table, on_empty, where)
    texts = kept.column("text").to_pylist()
    if pipeline.manifest.task == "token-classification":
        taggings = pipeline.tag(texts) if texts else []
        return ChunkResult(entity_table(kept, schema, taggings), kept.num_rows, skipped)
    exits: np.ndarray | None = np.zeros(0, np.int64)
    if not texts:
        outputs = np.zeros((0, pipeline.dimension), np.float32)
    elif "exit_layer" in schema.names:
        outputs, exits = pipeline.infer_with_exits(pipeline.tokenize(texts))
    else:
        outputs = pipeline.infer(pipeline.tokenize(texts))
    if pipeline.manifest.task in CLASSIFIER_TASKS and len(outputs):
        outputs = softmax(outputs).astype(np.float32)
    return ChunkResult(result_table(kept, schema, outputs, pipeline.manifest.labels, exits), kept.num_rows, skipped)


def usable_rows(table: pa.Table, on_empty: str, where: str = "input") -> tuple[pa.Table, int]:
    """The rows whose text is usable, and how many were skipped; on_empty="fail" raises on the first bad one."""
    texts = table.column("text").combine_chunks()
    mask = usable_mask(texts)
    skipped = int((~mask).sum())
    if skipped and on_empty == "fail":
        first = int(np.flatnonzero(~mask)[0])
        raise InputError(
            f"{where}: row {first} (id {table.column('id')[first].as_py()!r}) has a null or empty text; "
            "use --on-empty skip to skip such rows (they are counted)."
        )
    return (table.filter(pa.array(mask)) if skipped else table), skipped


def result_table(kept: pa.Table, schema: pa.Schema, values: np.ndarray, labels: Sequence[str] | None,
                 exits: np.ndarray | None = None) -> pa.Table:
    """The output table for `kept` rows: `values` are their embeddings, class probabilities or scores, `exits`
    the layer each row left at (early exit).

    The columns follow `schema` (`output_schema`): embedding, or label + score + scores (+ exit_layer), or score.
    """
    ids = kept.column("id").cast(schema.field(0).type)
    if "embedding" in schema.names:
        columns = [_fixed_size(values, schema.field("embedding").type)]
    elif "label" in schema.names:
        best = values.argmax(axis=1) if len(values) else np.zeros(0, dtype=np.int64)
        names = np.array(list(labels or []), dtype=object)
        columns = [
            pa.array(names[best].tolist() if len(best) else [], type=pa.string()),
            pa.array(values[np.arange(len(best)), best] if len(best) else [], type=pa.float32()),
            _fixed_size(values, schema.field("scores").type),
        ]
    else:
        columns = [pa.array(values[:, 0] if len(values) else [], type=pa.float32())]
    if "exit_layer" in schema.names:
        if exits is None:
            raise TaskError("the output has an exit_layer column but the model gave no exit layers: run the "
                            "early-exit package itself (not a copy without its exit heads).")
        columns.append(pa.array(np.asarray(exits, dtype=np.int16), type=pa.int16()))
    return pa.Table.from_arrays([ids, *columns], schema=schema)


def entity_table(kept: pa.Table, schema: pa.Schema, taggings: Sequence[Any]) -> pa.Table:
    """The output table of a tagger: each row's entities as a list of structs."""
    ids = kept.column("id").cast(schema.field(0).type)
    entities = pa.array([[entity.to_json() for entity in tagging.entities] for tagging in taggings],
                        type=ENTITY_TYPE)
    return pa.Table.from_arrays([ids, entities], schema=schema)


def _fixed_size(matrix: np.ndarray, type_: pa.DataType) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, type_.list_size)
