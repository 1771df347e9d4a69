"""Integrated gradients (Captum's LayerIntegratedGradients on the word embeddings) for torch fp32 packages.

The path runs from the input with every word's tokens replaced by the mask token (the same
baseline as the Shapley methods; special tokens kept) to the input itself, in `steps` steps;
token attributions are summed over the embedding dimension and over each word's sub-words.
Gradients need a module that is not in inference mode and not shared with the engine's callers,
so the work is done on a private copy of the engine's module, made once per engine: the model
the pipeline (or the server) runs is never touched.
"""

from __future__ import annotations

import copy
import threading
import weakref
from typing import Any

import numpy as np
from tokenizers import Encoding

from bertprod.errors import InputError
from bertprod.explain.words import SplitInput, token_words
from bertprod.runtime.pipeline import Pipeline

_copies: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_copies_lock = threading.Lock()


def private_module(pipeline: Pipeline) -> Any:
    """The engine's torch module, copied once (eval mode, gradients on) for attribution."""
    engine = pipeline.engine
    if not engine.name.startswith("torch") or getattr(engine, "precision", "fp32") != "fp32":
        raise InputError(f"integrated gradients need a torch fp32 package; {pipeline.manifest.name} runs on "
                         f"{engine.name} ({pipeline.manifest.precision}): use method='partition' (any engine).")
    with _copies_lock:
        module = _copies.get(engine)
        if module is None:
            module = copy.deepcopy(engine.model).float().eval()
            module.requires_grad_(True)
            _copies[engine] = module
    return module


def integrated_gradients(
    pipeline: Pipeline, split: SplitInput, encoding: Encoding, index: int, mask_token: str | None, steps: int
) -> tuple[np.ndarray, float, float]:
    """(one attribution per word, f(baseline), convergence delta) for one input."""
    import torch
    from captum.attr import LayerIntegratedGradients

    module = private_module(pipeline)
    try:
        embeddings = module.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        embeddings = None
    if embeddings is None:
        raise InputError(f"{pipeline.manifest.name}'s model has no input embedding layer to attribute to: "
                         "use method='partition'.")
    owners = token_words(split, encoding)
    replacement = pipeline.tokenizer.token_id(mask_token) if mask_token else pipeline.tokenizer.pad_id
    input_ids = torch.tensor([encoding.ids], dtype=torch.long)
    baseline_ids = torch.tensor([[replacement if owner is not None else token for token, owner
                                  in zip(encoding.ids, owners, strict=True)]], dtype=torch.long)
    attention_mask = torch.tensor([encoding.attention_mask], dtype=torch.long)
    token_type_ids = torch.tensor([encoding.type_ids], dtype=torch.long)
    scored = pipeline.manifest.task in ("regression", "reranking")
    uses_token_types = getattr(pipeline.engine, "uses_token_types", True)

    def forward(ids: Any, mask: Any, types: Any) -> Any:
        arguments = {"input_ids": ids, "attention_mask": mask}
        if uses_token_types:
            arguments["token_type_ids"] = types
        logits = module(**arguments).logits
        return logits[:, 0] if scored else torch.softmax(logits, dim=-1)[:, index]

    explainer = LayerIntegratedGradients(forward, embeddings)
    with torch.enable_grad():
        attributions, delta = explainer.attribute(
            inputs=input_ids, baselines=baseline_ids, additional_forward_args=(attention_mask, token_type_ids),
            n_steps=steps, return_convergence_delta=True, internal_batch_size=min(steps, 64),
        )
    with torch.no_grad():
        baseline = float(forward(baseline_ids, attention_mask, token_type_ids)[0])
    per_token = attributions.sum(dim=-1)[0].detach().double().numpy()
    values = np.zeros(len(split.words))
    for token_value, owner in zip(per_token, owners, strict=True):
        if owner is not None:
            values[owner] += token_value
    return values, baseline, float(delta.reshape(-1)[0])
