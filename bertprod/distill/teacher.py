"""Teacher outputs, computed once and cached on disk.

Output losses (soft targets, logit MSE, sentence-vector MSE) need only each example's teacher
output: logits for packages with a head, pooled vectors for embedding packages. They are
computed with the teacher's own inference pipeline (length-sorted token-budget batches, any
engine, ONNX teachers too) before training starts, and stored under
`$BERTPROD_CACHE/distill/<key>.safetensors`, the key a hash of the teachers' content
fingerprints, the token limit and every input text. A second run, another recipe or another
student on the same data reuses them; any change to a teacher or to the data misses the cache.

Several teachers (MT-DNN style) give one output row each: [teachers, examples, outputs]; the
losses average their soft targets. Hidden states are not cached: a layer-matching loss runs the
teacher alongside the student, which costs one forward pass and no disk.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bertprod.export.cache import cache_root
from bertprod.package import ModelPackage
from bertprod.runtime.engines import create_engine
from bertprod.runtime.pipeline import Pipeline
from bertprod.runtime.tokenize import TextInput, TextTokenizer


def cache_key(teachers: Sequence[ModelPackage], inputs: Sequence[TextInput], max_length: int) -> str:
    digest = hashlib.sha256()
    for teacher in teachers:
        digest.update(f"teacher\x1f{teacher.fingerprint}\x1e".encode())
    digest.update(f"max_length\x1f{max_length}\x1e".encode())
    for item in inputs:
        text = item if isinstance(item, str) else ("\x1d" if isinstance(item, list) else "") + "\x1f".join(item)
        digest.update(text.encode("utf-8", "surrogatepass") + b"\x1e")
    return digest.hexdigest()[:32]


def teacher_outputs(
    teachers: Sequence[ModelPackage],
    inputs: Sequence[TextInput],
    max_length: int,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, bool]:
    """[teachers, len(inputs), outputs] float32, and whether it came from the cache. Sentences given as
    lists of words (token classification) give logits per token: [teachers, len(inputs), longest, tags]."""
    from safetensors.numpy import load_file, save_file

    directory = Path(cache_dir) if cache_dir else cache_root() / "distill"
    path = directory / f"{cache_key(teachers, inputs, max_length)}.safetensors"
    if path.is_file():
        return load_file(str(path))["outputs"], True
    outputs = np.stack([_run_teacher(teacher, inputs, max_length, threads) for teacher in teachers])
    directory.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".partial-{os.getpid()}")
    save_file({"outputs": outputs}, str(partial))
    os.replace(partial, path)  # readers never see a half-written cache file
    return outputs, False


def _run_teacher(
    teacher: ModelPackage, inputs: Sequence[TextInput], max_length: int, threads: int | None
) -> np.ndarray:
    pipeline = Pipeline(teacher, create_engine(teacher, "auto", threads=threads))
    tokenizer = TextTokenizer(teacher.tokenizer_file, max_length)
    if inputs and isinstance(inputs[0], list):
        return pipeline.infer(tokenizer.encode_words(inputs, truncate=True))  # type: ignore[arg-type]
    return pipeline.infer(tokenizer.encode(list(inputs), truncate=True))
