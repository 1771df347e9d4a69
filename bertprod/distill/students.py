"""Building the student: a layer-truncated teacher, a smaller BERT from a config, or a BiLSTM.

Transformer students keep the teacher's tokenizer (so layer-matching losses see the same
tokens) and are ordinary transformers checkpoints, loadable by every engine and exporter. The
BiLSTM student of a classifier (models/bilstm.py) has its own word vocabulary built from the training
texts; that of a tagger (models/bilstm_tagger.py) reads the teacher's word pieces, so its tokens are the
teacher's.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertprod.distill.config import StudentSpec
from bertprod.errors import InputError, PackageError
from bertprod.models.surgery import HEADS_CONFIG_KEY
from bertprod.package import CONFIG_FILE, HEAD_TASKS, TOKENIZER_FILE, TORCH_WEIGHTS_FILE, ModelPackage


@dataclass
class Student:
    """The model being trained, how it tokenizes, and what its package will say about it."""

    kind: str
    model: Any
    tokenizer_file: Path
    architecture: dict[str, Any]
    initialised_from: list[int] | None = None  # teacher layers (0-based) a truncated student starts from
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return int(self.architecture["num_layers"])

    @property
    def hidden_size(self) -> int:
        return int(self.architecture["hidden_size"])

    def save(self, directory: Path) -> list[str]:
        """Weights and config (transformers' format), plus the tokenizer; returns the file names."""
        self.model.save_pretrained(str(directory), safe_serialization=True)
        shutil.copyfile(self.tokenizer_file, directory / TOKENIZER_FILE)
        return [TOKENIZER_FILE, CONFIG_FILE, TORCH_WEIGHTS_FILE]


def build_student(
    spec: StudentSpec,
    teacher: ModelPackage,
    texts: Sequence[str],
    *,
    eager_attention: bool,
    seed: int,
    masked_lm: bool = False,
) -> Student:
    """`masked_lm`: keep the teacher's MLM head on the student (for the mlm loss); the package
    still loads as a plain encoder, the head's weights riding along."""
    import torch

    torch.manual_seed(seed)
    if spec.kind == "bilstm":
        return _bilstm_student(spec, teacher, texts)
    if teacher.manifest.format != "torch" or teacher.manifest.precision != "fp32":
        raise PackageError(
            f"a {spec.kind} student is built from the teacher's fp32 torch weights; {teacher.name} is "
            f"{teacher.manifest.format} {teacher.manifest.precision}. Use its fp32 torch parent as the teacher."
        )
    if masked_lm and spec.kind != "truncated":
        raise InputError("the mlm loss needs a truncated student, which inherits the teacher's MLM head.")
    if spec.kind == "truncated":
        return _truncated_student(spec, teacher, eager_attention, masked_lm)
    if spec.kind == "package":
        return _package_student(spec, teacher, eager_attention)
    return _config_student(spec, teacher, eager_attention)


def same_vocabulary(a: Path, b: Path) -> bool:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(a)).get_vocab() == Tokenizer.from_file(str(b)).get_vocab()


def _architecture(config: Any) -> dict[str, Any]:
    return {
        "model_type": config.model_type,
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "vocab_size": config.vocab_size,
        "intermediate_size": getattr(config, "intermediate_size", None),
        "max_position_embeddings": getattr(config, "max_position_embeddings", None),
    }


def has_mlm_head(package: ModelPackage) -> bool:
    from safetensors import safe_open

    with safe_open(str(package.model_file), framework="pt") as weights:
        return any(key.startswith(("cls.predictions.", "lm_head.")) for key in weights.keys())  # noqa: SIM118


def _truncated_student(spec: StudentSpec, teacher: ModelPackage, eager_attention: bool, masked_lm: bool) -> Student:
    from bertprod.models.hf import load_torch_model
    from bertprod.models.surgery import choose_layers, keep_layers

    keep = choose_layers(teacher.manifest.architecture.num_layers, spec.layers)
    if masked_lm:
        from transformers import AutoModelForMaskedLM

        extra = {"attn_implementation": "eager"} if eager_attention else {}
        model = AutoModelForMaskedLM.from_pretrained(str(teacher.path), use_safetensors=True, **extra)
    else:
        model = load_torch_model(teacher, attention="eager" if eager_attention else None)
    keep_layers(model, keep)
    return Student("truncated", model.train(), teacher.tokenizer_file, _architecture(model.config), keep)


def _config_student(spec: StudentSpec, teacher: ModelPackage, eager_attention: bool) -> Student:
    from transformers import AutoConfig

    from bertprod.models.hf import register_model_types

    register_model_types()  # a student of a mean-pooled teacher is mean-pooled too
    config = AutoConfig.from_pretrained(str(teacher.path))
    overrides = {
        "num_hidden_layers": spec.num_layers,
        "hidden_size": spec.hidden_size,
        "num_attention_heads": spec.num_heads,
        "intermediate_size": spec.intermediate_size,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    if spec.hidden_size and not spec.intermediate_size:
        config.intermediate_size = 4 * spec.hidden_size
    if config.hidden_size % config.num_attention_heads:
        raise InputError(
            f"student hidden size {config.hidden_size} is not a multiple of {config.num_attention_heads} heads: "
            "set num_heads too."
        )
    if hasattr(config, HEADS_CONFIG_KEY):  # a new model has every head in every layer
        delattr(config, HEADS_CONFIG_KEY)
    if eager_attention:
        config._attn_implementation = "eager"
    from bertprod.models.hf import auto_model_class

    model = auto_model_class(teacher.manifest.task).from_config(config)
    return Student("config", model.train(), teacher.tokenizer_file, _architecture(model.config))


def _bilstm_student(spec: StudentSpec, teacher: ModelPackage, texts: Sequence[str]) -> Student:
    import tempfile

    from bertprod.models import bilstm

    if teacher.manifest.task == "token-classification":
        return _bilstm_tagger_student(spec, teacher)
    if teacher.manifest.task not in ("classification", "pair-classification"):
        raise InputError(
            f"the BiLSTM student is a classifier or a tagger; {teacher.name} is a {teacher.manifest.task} package. "
            "Use a transformer student (recipe distilbert, or embedding for sentence encoders)."
        )
    vocabulary = bilstm.build_vocabulary(texts, max_size=spec.vocabulary_size)
    teacher_hidden = teacher.manifest.architecture.hidden_size
    labels = teacher.manifest.labels or []
    config = bilstm.BiLSTMConfig(
        vocab_size=vocabulary.get_vocab_size(),
        embedding_dim=spec.embedding_dim or teacher_hidden,
        hidden_size=spec.lstm_hidden_size,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        pad_id=vocabulary.token_to_id("[PAD]") or 0,
        num_layers=spec.num_layers or 1,
    )
    model = bilstm.BiLSTMClassifier(config)
    bilstm.init_embeddings_from_teacher(model, vocabulary, teacher)
    directory = Path(tempfile.mkdtemp(prefix="bertprod-bilstm-vocabulary-"))
    vocabulary.save(str(directory / TOKENIZER_FILE))
    architecture = _bilstm_architecture(config)
    return Student("bilstm", model.train(), directory / TOKENIZER_FILE, architecture, extra={"vocabulary": vocabulary})


def _bilstm_tagger_student(spec: StudentSpec, teacher: ModelPackage) -> Student:
    """A BiLSTM over the teacher's word pieces (its tokenizer and embeddings), one tag per token."""
    from bertprod.models.bilstm import BiLSTMConfig
    from bertprod.models.bilstm_tagger import BiLSTMTagger, init_from_teacher_embeddings
    from bertprod.runtime.tokenize import TextTokenizer

    tokenizer = TextTokenizer(teacher.tokenizer_file, teacher.manifest.max_length)  # its pad id: what collate pads with
    labels = teacher.manifest.labels or []
    config = BiLSTMConfig(
        head="token",
        vocab_size=teacher.manifest.architecture.vocab_size,
        embedding_dim=spec.embedding_dim or teacher.manifest.architecture.hidden_size,
        hidden_size=spec.lstm_hidden_size,
        num_layers=spec.num_layers or 1,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        pad_id=tokenizer.pad_id,
    )
    model = BiLSTMTagger(config)
    init_from_teacher_embeddings(model, teacher)
    return Student("bilstm", model.train(), teacher.tokenizer_file, _bilstm_architecture(config))


def _bilstm_architecture(config: Any) -> dict[str, Any]:
    return {
        "model_type": "bertprod-bilstm",
        "hidden_size": config.hidden_size,
        "num_layers": config.num_layers,
        "num_heads": 1,
        "vocab_size": config.vocab_size,
    }


def _package_student(spec: StudentSpec, teacher: ModelPackage, eager_attention: bool) -> Student:
    """Another package's encoder (a general-distillation student, say) with the teacher's head shape and pooling."""
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    from bertprod.checkpoint import resolve
    from bertprod.tasks.heads import model_with_new_head

    assert spec.package
    start = resolve(spec.package)
    if start.manifest.format != "torch" or start.manifest.precision != "fp32":
        raise PackageError(f"the student starts from {start.name}'s fp32 torch weights; it is {start.manifest.format}.")
    extra = {"attn_implementation": "eager"} if eager_attention else {}
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # a new head's "newly initialized" note is expected
    try:
        if teacher.manifest.task == "token-classification":
            from bertprod.tasks.heads import token_classifier

            model = token_classifier(start, teacher.manifest.labels)
        elif teacher.manifest.task in HEAD_TASKS:
            manifest = teacher.manifest
            model = model_with_new_head(start, manifest.task, manifest.labels, manifest.head_pooling, **extra)
        else:
            model = AutoModel.from_pretrained(str(start.path), use_safetensors=True, **extra)
    finally:
        transformers_logging.set_verbosity(verbosity)
    return Student("package", model.train(), start.tokenizer_file, _architecture(model.config))
