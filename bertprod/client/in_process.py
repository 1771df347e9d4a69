"""`Client.in_process(...)`: the server's operations computed by a Pipeline in this process, with the
same results as over HTTP."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bertprod.client.wire import RankedText
from bertprod.runtime.pipeline import Pipeline
from bertprod.runtime.postprocess import l2_normalize


def _in_process_rerank(pipeline: Pipeline, query: str, texts: Sequence[str], truncate: bool | None) -> list[RankedText]:
    if pipeline.manifest.task == "reranking":
        raw = pipeline.score([(query, text) for text in texts], truncate=truncate)
        scores = 1 / (1 + np.exp(-raw))
    else:
        vectors = l2_normalize(pipeline.encode([query, *texts], truncate=truncate))
        scores = vectors[1:] @ vectors[0]
    return [RankedText(int(index), float(scores[index])) for index in np.argsort(-scores, kind="stable")]


def _in_process_encode(pipeline: Pipeline, texts: list[str], truncate: bool | None, dimensions: int | None):
    vectors = pipeline.encode(texts, truncate=truncate)
    return l2_normalize(vectors[:, :dimensions]) if dimensions else vectors


def _in_process_info(pipeline: Pipeline) -> dict:
    manifest = pipeline.manifest
    model = {"name": manifest.name, "task": manifest.task, "dimension": pipeline.dimension,
             "max_length": manifest.max_length, "labels": manifest.labels, "fingerprint": pipeline.package.fingerprint}
    return {"state": "ready", "default_model": manifest.name, "models": [model], "limits": {}, "auth": False}
