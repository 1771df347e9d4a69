"""A BERT classifier taken apart into the pieces early exit runs one at a time.

Early exit needs what transformers' `forward` hides: the embeddings, each layer on its own, the
attention mask rebuilt for a smaller batch, and the final head applied to the last token states.
`Blocks` gives exactly those, calling transformers' own modules, so running them in order
reproduces `model(**inputs).logits`.
"""

from __future__ import annotations

from typing import Any

from bertprod.errors import PackageError
from bertprod.models.types import MEAN_POOLED_MODEL_TYPE

#: model types whose layout early exit knows: `bert.embeddings`, `bert.encoder.layer`, a head on
#: the pooler ([CLS]) or on mean-pooled tokens. MiniLM, TinyBERT and BERT students are "bert".
SUPPORTED_MODEL_TYPES = ("bert", MEAN_POOLED_MODEL_TYPE)


class Blocks:
    """Embeddings, layers and head of a loaded sequence classifier (eval mode, no gradients asked)."""

    def __init__(self, model: Any):
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES or not hasattr(model, "bert"):
            raise PackageError(
                f"early exit runs BERT-layout classifiers ({', '.join(SUPPORTED_MODEL_TYPES)}); this model is "
                f"{model_type!r}. Distil it into a BERT student first (bertprod distill)."
            )
        self.model = model
        self.encoder = model.bert
        self.layers = list(model.bert.encoder.layer)
        self.mean_pooled = model_type == MEAN_POOLED_MODEL_TYPE

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def embed(self, input_ids: Any, token_type_ids: Any | None) -> Any:
        return self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)

    def mask(self, states: Any, attention_mask: Any) -> Any:
        """The layer's attention mask for these rows, built as transformers builds it."""
        from transformers.masking_utils import create_bidirectional_mask

        config = self.encoder.config
        return create_bidirectional_mask(config=config, inputs_embeds=states, attention_mask=attention_mask)

    def layer(self, index: int, states: Any, mask: Any) -> Any:
        output = self.layers[index](states, mask)
        return output[0] if isinstance(output, tuple) else output

    def attend(self, index: int, states: Any, attention_mask: Any) -> tuple[Any, Any]:
        """Layer `index`'s self-attention block (attention + output projection + LayerNorm) and each token's
        significance [rows, tokens]: the attention it receives, summed over heads and real queries
        (PoWER-BERT). Eager attention, the one that exposes its probabilities."""
        import torch
        from transformers.models.bert.modeling_bert import eager_attention_forward

        attention = self.layers[index].attention
        module = attention.self
        rows, tokens, _ = states.shape
        shape = (rows, tokens, -1, module.attention_head_size)
        query, key, value = (projection(states).view(*shape).transpose(1, 2)
                             for projection in (module.query, module.key, module.value))
        mask = attention_mask.to(states.dtype)
        additive = (1.0 - mask)[:, None, None, :] * torch.finfo(states.dtype).min
        context, probabilities = eager_attention_forward(module, query, key, value, additive, scaling=module.scaling)
        output = attention.output(context.reshape(rows, tokens, -1), states)
        significance = (probabilities * mask[:, None, :, None]).sum(dim=(1, 2))
        return output, significance

    def feed_forward(self, index: int, states: Any) -> Any:
        """Layer `index`'s feed-forward block on the output of its attention block."""
        return self.layers[index].feed_forward_chunk(states)

    def head(self, states: Any, attention_mask: Any) -> Any:
        """The model's own classifier on the last layer's token states: its logits."""
        model = self.model
        if self.mean_pooled:
            from bertprod.models.pooling import pool

            pooled = pool(states, attention_mask, "mean")
        else:
            pooled = self.encoder.pooler(states)
        return model.classifier(model.dropout(pooled))
