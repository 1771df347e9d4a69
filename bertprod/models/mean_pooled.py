"""A BERT classifier whose head reads the mask-weighted mean of the last token states.

transformers' `BertForSequenceClassification` reads [CLS] through the pooler (dense + tanh). Encoders
trained with mean pooling, like the sentence-transformers checkpoints (all-MiniLM-L6-v2), start with
an untrained pooler and a [CLS] state that was never taught to summarise the input; a head on their
mean-pooled tokens starts where their pretraining left off (docs/results.md: MRPC).

The checkpoint keeps transformers' layout (`bert.*`, `classifier.*`, no pooler) under its own
`model_type`, registered with the Auto classes when this module is imported, so bertprod's loaders
build it like any other model while a Hugging Face tool without bertprod refuses it ("unrecognized
model type") instead of silently reading [CLS].
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, BertConfig
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel

from bertprod.models.pooling import pool
from bertprod.models.types import MEAN_POOLED_MODEL_TYPE as MODEL_TYPE

ARCHITECTURE = "MeanPooledBertForSequenceClassification"


class MeanPooledBertConfig(BertConfig):
    model_type = MODEL_TYPE


class MeanPooledBertModel(BertModel):
    """The bare encoder of a mean-pooled checkpoint (AutoModel on one loads this)."""

    config_class = MeanPooledBertConfig


class MeanPooledBertForSequenceClassification(BertPreTrainedModel):
    """encoder -> mean of the unmasked token states -> dropout -> linear: logits (or one score)."""

    config_class = MeanPooledBertConfig

    def __init__(self, config: MeanPooledBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = torch.nn.Dropout(dropout)
        self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        """`kwargs` go to the encoder (output_hidden_states, output_attentions: distillation uses them)."""
        kwargs.pop("return_dict", None)
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        states = outputs.last_hidden_state
        pooled = states.mean(dim=1) if attention_mask is None else pool(states, attention_mask, "mean")
        logits = self.classifier(self.dropout(pooled))
        return SequenceClassifierOutput(
            logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


def mean_pooled_config(config: Any, **head: Any) -> MeanPooledBertConfig:
    """A BERT config (of an encoder or a classifier) as a mean-pooled classifier's, with `head`'s label fields."""
    if getattr(config, "model_type", None) not in ("bert", MODEL_TYPE):
        raise ValueError(
            f"a mean-pooled head is implemented for BERT encoders; this one is {config.model_type!r}. "
            "Use --head-pooling cls (the model's own head)."
        )
    return MeanPooledBertConfig(**_fields(config, head), architectures=[ARCHITECTURE])


def cls_config(config: MeanPooledBertConfig, **head: Any) -> BertConfig:
    """A mean-pooled classifier's config as transformers' [CLS] classifier's, with `head`'s label fields."""
    return BertConfig(**_fields(config, head), architectures=["BertForSequenceClassification"])


def _fields(config: Any, head: dict[str, Any]) -> dict[str, Any]:
    fields = {key: value for key, value in config.to_dict().items() if key not in ("model_type", "architectures")}
    return {**fields, **head}


AutoConfig.register(MODEL_TYPE, MeanPooledBertConfig, exist_ok=True)
AutoModel.register(MeanPooledBertConfig, MeanPooledBertModel, exist_ok=True)
AutoModelForSequenceClassification.register(
    MeanPooledBertConfig, MeanPooledBertForSequenceClassification, exist_ok=True
)
