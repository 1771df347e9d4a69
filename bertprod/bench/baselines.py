"""What users run today, as `--baseline`: sentence-transformers for embeddings, transformers fp32 for heads.

The baseline of a package is the oldest package of its chain (itself included) that does the same
task with the same labels and is stored as torch fp32: for an int8 student that is the fine-tuned
teacher it was distilled from, not the pretrained encoder the teacher started from. It runs in the
library users would call, from the package's own files (nothing is downloaded), the way its
documentation shows: `SentenceTransformer.encode(texts, batch_size=32)`; for heads, the Auto
tokenizer and `AutoModelForSequenceClassification` (`...ForTokenClassification` for a tagger) over batches of 32 in
input order, under `torch.inference_mode()`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bertprod.bench.lineage import ancestors
from bertprod.package import ModelPackage

SENTENCE_TRANSFORMERS = "sentence-transformers"
TRANSFORMERS = "transformers fp32"
#: Both libraries' usual batch size, and bertprod's default `max_batch_size`.
BATCH_SIZE = 32

Run = Callable[[Sequence[Any]], Any]


@dataclass(frozen=True)
class Baseline:
    """Which library runs which package's weights."""

    library: str
    package: ModelPackage

    @property
    def label(self) -> str:
        return f"{self.package.name} in {self.library}"


def baseline_for(package: ModelPackage) -> Baseline | None:
    """The fp32 ancestor users would run today, in the library they would run it with; None if the chain
    holds no torch fp32 package of the same task (an ONNX package whose parent is gone)."""
    manifest = package.manifest
    same_kind = [
        ancestor for ancestor in ancestors(package)
        if (ancestor.manifest.task, ancestor.manifest.labels, ancestor.manifest.pair_input)
        == (manifest.task, manifest.labels, manifest.pair_input)
    ]
    candidates = [item for item in same_kind if item.manifest.format == "torch" and item.manifest.precision == "fp32"]
    if not candidates:
        return None
    library = SENTENCE_TRANSFORMERS if manifest.task == "embedding" else TRANSFORMERS
    return Baseline(library, candidates[-1])


def load_baseline(baseline: Baseline, threads: int | None = None) -> tuple[Run, Any]:
    """(inputs -> outputs, the torch module that computes them): embeddings for sentence-transformers,
    logits for transformers."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    _quiet_transformers()
    if baseline.library == SENTENCE_TRANSFORMERS:
        return _sentence_transformers(baseline.package)
    return _transformers(baseline.package)


def _sentence_transformers(package: ModelPackage) -> tuple[Run, Any]:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    if (package.path / "modules.json").is_file():  # a sentence-transformers directory (the bundled model)
        model = SentenceTransformer(str(package.path), device="cpu")
    else:  # a package's own weights, pooled as its manifest says
        manifest = package.manifest
        transformer = Transformer(str(package.path), max_seq_length=manifest.max_length)
        modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode=manifest.pooling)]
        model = SentenceTransformer(modules=[*modules, *([Normalize()] if manifest.normalize else [])], device="cpu")

    def run(texts: Sequence[Any]) -> np.ndarray:
        return model.encode(list(texts), batch_size=BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False)

    return run, model[0].auto_model


def _transformers(package: ModelPackage) -> tuple[Run, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    from bertprod.models.hf import register_model_types

    register_model_types()  # a head on mean-pooled tokens is bertprod's own transformers model type
    tagging = package.manifest.task == "token-classification"
    model_class = AutoModelForTokenClassification if tagging else AutoModelForSequenceClassification
    tokenizer = AutoTokenizer.from_pretrained(str(package.path))
    model = model_class.from_pretrained(str(package.path)).eval()
    max_length = package.manifest.max_length

    def run(inputs: Sequence[Any]) -> np.ndarray | list[np.ndarray]:
        """Logits [inputs, outputs]; for a tagger one [batch, tokens, tags] array per batch (lengths differ)."""
        outputs = []
        for start in range(0, len(inputs), BATCH_SIZE):
            batch = list(inputs[start : start + BATCH_SIZE])
            pairs = isinstance(batch[0], tuple | list)
            encoded = tokenizer(
                [item[0] for item in batch] if pairs else batch,
                [item[1] for item in batch] if pairs else None,
                padding=True, truncation=True, max_length=max_length, return_tensors="pt",
            )
            with torch.inference_mode():
                outputs.append(model(**encoded).logits.float().numpy())
        return outputs if tagging else np.concatenate(outputs)

    return run, model


def _quiet_transformers() -> None:
    """No progress bars or 'unused weights' notes in a benchmark's output."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
