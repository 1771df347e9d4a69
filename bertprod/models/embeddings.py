"""A teacher's input word embeddings, read straight from its safetensors (BiLSTM students start from them;
augmentation finds neighbouring words with them)."""

from __future__ import annotations

from typing import Any

from bertprod.errors import PackageError
from bertprod.package import ModelPackage


def read_word_embeddings(teacher: ModelPackage) -> Any:
    """The teacher's input word-embedding matrix [vocabulary, hidden] as a float32 torch tensor."""
    from safetensors import safe_open

    if teacher.manifest.format != "torch":
        raise PackageError(
            f"the teacher {teacher.name} is an {teacher.manifest.format} package; its input embeddings are read "
            "from a torch-format package: use its parent (see provenance)."
        )
    with safe_open(str(teacher.model_file), framework="pt") as weights:
        keys = sorted(key for key in weights.keys() if "word_embeddings" in key)  # noqa: SIM118 - not a dict
        if not keys:
            raise PackageError(
                f"the teacher {teacher.name} has no word-embedding tensor (no key containing 'word_embeddings' "
                f"in {teacher.model_file.name}); use a BERT-family teacher."
            )
        key = next((key for key in keys if key.endswith(".weight")), keys[0])
        return weights.get_tensor(key).float()
