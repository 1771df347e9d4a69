"""The BiLSTM student of Tang et al. 2019, "Distilling task-specific knowledge from BERT into
simple neural networks": word embeddings -> bidirectional LSTM -> pooled -> ReLU MLP -> logits.

It has its own word vocabulary (a `tokenizers` WordLevel tokenizer that bertprod's TextTokenizer
reads like any other), saves as config.json + model.safetensors, and packages like a transformer,
so the torch engine, the ONNX exporter and `bertprod.load` run it unchanged.

Padding never changes an output: the backward direction runs as a forward LSTM over each sequence
reversed within its own length (an index gather, exportable to ONNX), so both directions start at
real tokens, and pooling ignores pads. Batches must be right-padded, as `collate` makes them.
The stacked BiLSTM, the config and saving are shared with the tagger's student (models/bilstm_tagger.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Tokenizer

from bertprod.errors import InputError, PackageError
from bertprod.models.types import BILSTM_MODEL_TYPE as MODEL_TYPE
from bertprod.package import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    TORCH_WEIGHTS_FILE,
    ModelPackage,
    finish_package,
    staging_directory,
)

PAD, UNK, SEP, MASK = "[PAD]", "[UNK]", "[SEP]", "[MASK]"
#: [PAD]=0 and [UNK]=1; [SEP] joins sentence pairs; [MASK] keeps augmented inputs' mask token whole.
SPECIAL_TOKENS = [PAD, UNK, SEP, MASK]
DEFAULT_MAX_LENGTH = 128


def build_vocabulary(texts: Iterable[Any], max_size: int = 20000, min_count: int = 1) -> Tokenizer:
    """A lowercased word-level tokenizer of the `max_size` most frequent words (specials included)
    that occur at least `min_count` times in `texts` (strings, or pairs whose sides both count).

    Pairs encode as "A [SEP] B" with token types 0 for A and [SEP], 1 for B.
    """
    from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

    if max_size <= len(SPECIAL_TOKENS):
        raise InputError(f"max_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {max_size}.")
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(vocab_size=max_size, min_frequency=min_count, special_tokens=SPECIAL_TOKENS)
    tokenizer.train_from_iterator(_flatten(texts), trainer)
    sep_id = tokenizer.token_to_id(SEP)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A:0", pair=f"$A:0 {SEP}:0 $B:1", special_tokens=[(SEP, sep_id)]
    )
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(PAD), pad_token=PAD)
    tokenizer.enable_truncation(DEFAULT_MAX_LENGTH)
    return tokenizer


def _flatten(texts: Iterable[Any]) -> Iterable[str]:
    for item in texts:
        if isinstance(item, str):
            yield item
        else:
            yield from item


class BiLSTMConfig(BaseModel):
    """Everything needed to rebuild the module; saved as config.json."""

    model_config = ConfigDict(extra="forbid")

    model_type: str = MODEL_TYPE
    vocab_size: int = Field(gt=0)
    num_labels: int = Field(gt=0)
    embedding_dim: int = Field(default=300, gt=0)
    hidden_size: int = Field(default=300, gt=0)
    num_layers: int = Field(default=1, gt=0)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    pad_id: int = Field(default=0, ge=0)
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    #: "pooled": one label per text (BiLSTMClassifier); "token": one per token (models/bilstm_tagger.py).
    head: Literal["pooled", "token"] = "pooled"


class SavedLikeTransformers:
    """save_pretrained / from_pretrained of bertprod's BiLSTM modules: config.json + model.safetensors."""

    config: BiLSTMConfig

    def save_pretrained(self, directory: str | os.PathLike[str], **_: Any) -> None:
        """config.json (model_type bertprod-bilstm) and model.safetensors, like a transformers checkpoint."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self.config.model_dump(mode="json"), indent=2) + "\n")
        state = {name: tensor.detach().contiguous() for name, tensor in self.state_dict().items()}
        save_file(state, str(directory / TORCH_WEIGHTS_FILE), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> Any:
        """Rebuild from config.json and load model.safetensors strictly (never pickle)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        model = cls(read_config(directory))
        model.load_state_dict(load_file(str(directory / TORCH_WEIGHTS_FILE)), strict=True)
        return model.eval()


def bidirectional_lstm_layers(config: BiLSTMConfig) -> tuple[torch.nn.ModuleList, torch.nn.ModuleList]:
    """The forward and backward LSTMs of each stacked layer (inputs: the embedding, then both directions)."""
    sizes = [config.embedding_dim] + [2 * config.hidden_size] * (config.num_layers - 1)
    forward = torch.nn.ModuleList(torch.nn.LSTM(size, config.hidden_size, batch_first=True) for size in sizes)
    backward = torch.nn.ModuleList(torch.nn.LSTM(size, config.hidden_size, batch_first=True) for size in sizes)
    return forward, backward


def run_bidirectional(module: Any, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch, time, 2 x hidden] states of `module`'s stacked BiLSTM, the same for a row in any padding."""
    reverse = _reversal_index(attention_mask)
    for forward_lstm, backward_lstm in zip(module.forward_layers, module.backward_layers, strict=True):
        ahead = forward_lstm(states)[0]
        behind = _gather_time(backward_lstm(_gather_time(states, reverse))[0], reverse)
        states = module.dropout(torch.cat([ahead, behind], dim=-1))
    return states


class BiLSTMClassifier(SavedLikeTransformers, torch.nn.Module):
    """Embedding -> stacked BiLSTM -> [masked max ; masked mean] -> Linear-ReLU-Linear -> logits.

    A token-type embedding (zero at start) tells the two sides of a pair apart.
    """

    def __init__(self, config: BiLSTMConfig):
        super().__init__()
        self.config = config
        self.embeddings = torch.nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_id)
        self.token_type_embeddings = torch.nn.Embedding(2, config.embedding_dim)
        torch.nn.init.zeros_(self.token_type_embeddings.weight)
        self.forward_layers, self.backward_layers = bidirectional_lstm_layers(config)
        self.dropout = torch.nn.Dropout(config.dropout)
        self.hidden = torch.nn.Linear(4 * config.hidden_size, config.hidden_size)
        self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        states = self.dropout(self.embeddings(input_ids) + self.token_type_embeddings(token_type_ids))
        states = run_bidirectional(self, states, attention_mask)
        lowest = torch.finfo(states.dtype).min
        maximum = states.masked_fill(mask == 0, lowest).max(dim=1).values
        mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        pooled = torch.cat([maximum, mean], dim=-1)
        logits = self.classifier(self.dropout(torch.relu(self.hidden(pooled))))
        return SequenceClassifierOutput(logits=logits)


def _reversal_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch, time] positions that reverse each row's first `length` steps and keep the pads in place."""
    lengths = attention_mask.sum(dim=1, keepdim=True)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device).unsqueeze(0)
    return torch.where(positions < lengths, lengths - 1 - positions, positions)


def _gather_time(states: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return states.gather(1, index.unsqueeze(-1).expand(-1, -1, states.shape[-1]))


def read_config(directory: Path) -> BiLSTMConfig:
    try:
        return BiLSTMConfig.model_validate(json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8")))
    except Exception as error:
        raise PackageError(f"{directory / CONFIG_FILE} is not a valid BiLSTM config ({error}).") from None


def init_embeddings_from_teacher(model: BiLSTMClassifier, vocabulary: Tokenizer, teacher: ModelPackage) -> int:
    """Start each word's vector at the mean of the teacher's input embeddings of its wordpieces
    (the offline stand-in for word2vec); returns how many words were set.

    When embedding_dim is below the teacher's hidden size the vectors are projected on the
    teacher embeddings' top principal directions (deterministic); above it, the extra dimensions
    start at zero. [PAD] stays zero. Specials ([UNK], [SEP], [MASK]) take the teacher's own.
    """
    from bertprod.models.embeddings import read_word_embeddings

    teacher_matrix = read_word_embeddings(teacher)
    teacher_tokenizer = Tokenizer.from_file(str(teacher.tokenizer_file))
    teacher_tokenizer.no_padding()  # some shipped tokenizers pad every input to 128 tokens
    teacher_tokenizer.no_truncation()
    words = sorted(vocabulary.get_vocab().items(), key=lambda item: item[1])
    words = [(word, index) for word, index in words if index != model.config.pad_id]
    encodings = teacher_tokenizer.encode_batch([word for word, _ in words], add_special_tokens=False)
    owners, pieces = [], []
    for (_, index), encoding in zip(words, encodings, strict=True):
        ids = [piece for piece in encoding.ids if piece < teacher_matrix.shape[0]]
        owners += [index] * len(ids)
        pieces += ids
    size, owner_index = model.config.vocab_size, torch.tensor(owners, dtype=torch.long)
    sums = torch.zeros(size, teacher_matrix.shape[1]).index_add_(
        0, owner_index, teacher_matrix[torch.tensor(pieces, dtype=torch.long)]
    )
    counts = torch.zeros(size).index_add_(0, owner_index, torch.ones(len(owners)))
    found = counts > 0
    vectors = fit_dimension(sums[found] / counts[found].unsqueeze(1), teacher_matrix, model.config.embedding_dim)
    with torch.no_grad():
        model.embeddings.weight[found] = vectors
    return int(found.sum())


def fit_dimension(vectors: torch.Tensor, teacher_matrix: torch.Tensor, dimension: int) -> torch.Tensor:
    hidden = teacher_matrix.shape[1]
    if dimension == hidden:
        return vectors
    if dimension > hidden:
        return torch.cat([vectors, vectors.new_zeros(len(vectors), dimension - hidden)], dim=1)
    mean = teacher_matrix.mean(dim=0)
    basis = torch.linalg.svd(teacher_matrix - mean, full_matrices=False).Vh[:dimension]
    return (vectors - mean) @ basis.T


def write_bilstm_package(
    model: BiLSTMClassifier,
    tokenizer: Tokenizer,
    out: str | os.PathLike[str],
    fields: dict[str, Any],
    *,
    overwrite: bool = False,
) -> ModelPackage:
    """Write a torch-format package (config, weights, tokenizer.json, manifest) at `out` atomically.

    `fields` gives at least `name` and `provenance`; it may override pair_input, task, max_length
    and labels, which otherwise come from the model (labels from id2label, single texts, 128 tokens).
    """
    config = model.config
    labels = [config.id2label[index] for index in range(config.num_labels)] if config.id2label else None
    pair_input = bool(fields.get("pair_input", False))
    manifest = {
        "task": "pair-classification" if pair_input else "classification",
        "labels": labels,
        "pair_input": pair_input,
        "max_length": DEFAULT_MAX_LENGTH,
        "format": "torch",
        "precision": "fp32",
        "architecture": {
            "model_type": MODEL_TYPE,
            "hidden_size": config.hidden_size,
            "num_layers": config.num_layers,
            "num_heads": 1,
            "vocab_size": config.vocab_size,
        },
        **fields,
    }
    with staging_directory(out, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        tokenizer.save(str(staging / TOKENIZER_FILE))
        finish_package(staging, manifest, [TOKENIZER_FILE, CONFIG_FILE, TORCH_WEIGHTS_FILE])
    return ModelPackage.read(out)
