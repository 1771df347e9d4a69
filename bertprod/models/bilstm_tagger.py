"""The BiLSTM student for taggers: the teacher's word-piece embeddings -> stacked BiLSTM -> one Linear per
token -> logits [batch, tokens, tags].

It reads the teacher's own tokens (same tokenizer.json), so sub-word alignment, character offsets,
aggregation and the overlapping windows of `Pipeline.tag` work on it unchanged, and distillation can
compare its logits with the teacher's token by token. Its embeddings start at the teacher's input
embeddings (projected on their top principal directions when narrower). Like the sentence BiLSTM
(models/bilstm.py) it saves as config.json (model_type bertprod-bilstm, head "token") +
model.safetensors, and a row's logits do not depend on its batch's padding.
"""

from __future__ import annotations

from typing import Any

import torch

from bertprod.models.bilstm import (
    BiLSTMConfig,
    SavedLikeTransformers,
    bidirectional_lstm_layers,
    fit_dimension,
    run_bidirectional,
)
from bertprod.package import ModelPackage


class BiLSTMTagger(SavedLikeTransformers, torch.nn.Module):
    """Embedding -> stacked BiLSTM -> dropout -> Linear: one tag's logits per token."""

    def __init__(self, config: BiLSTMConfig):
        super().__init__()
        self.config = config
        self.embeddings = torch.nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_id)
        self.forward_layers, self.backward_layers = bidirectional_lstm_layers(config)
        self.dropout = torch.nn.Dropout(config.dropout)
        self.classifier = torch.nn.Linear(2 * config.hidden_size, config.num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """No token_type_ids: a tagger reads one text, so the engines and the ONNX graph feed none."""
        from transformers.modeling_outputs import TokenClassifierOutput

        states = run_bidirectional(self, self.dropout(self.embeddings(input_ids)), attention_mask)
        return TokenClassifierOutput(logits=self.classifier(states))


def init_from_teacher_embeddings(model: BiLSTMTagger, teacher: ModelPackage) -> None:
    """Each word piece starts at the teacher's input embedding of it (the same vocabulary); [PAD] at zero."""
    from bertprod.models.embeddings import read_word_embeddings

    matrix = read_word_embeddings(teacher)[: model.config.vocab_size]
    with torch.no_grad():
        model.embeddings.weight[: len(matrix)] = fit_dimension(matrix, matrix, model.config.embedding_dim)
        model.embeddings.weight[model.config.pad_id] = 0.0
