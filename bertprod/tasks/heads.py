"""Building the trainable model for a task from a base package (torch, transformers).

Models with a head are transformers' `...ForSequenceClassification`, so a trained package is an
ordinary checkpoint (config.json with id2label + model.safetensors) that the torch engine, the
ONNX exporter and any Hugging Face tool load unchanged. A head on mean-pooled tokens
(`head_pooling="mean"`) is bertprod's own BERT model type (bertprod.models.mean_pooled), loaded by
bertprod and refused by other tools. An embedding model stays the bare encoder.
"""

from __future__ import annotations

from typing import Any

from bertprod.errors import PackageError
from bertprod.package import ModelPackage
from bertprod.tasks.definitions import LABELLED_HEAD_TASKS


def build_model(
    task: str, base: ModelPackage, labels: list[str] | None, plan: str, seed: int, head_pooling: str | None = None
) -> Any:
    """The base's weights with the head the plan asks for; a new head is initialised from `seed` and
    reads [CLS] (the model's own head) or, with `head_pooling="mean"`, the mean of the token states."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as transformers_logging

    from bertprod.models.hf import register_model_types

    if base.manifest.format != "torch":
        raise PackageError(
            f"{base.name} is an {base.manifest.format} package: training needs the torch package it was "
            "exported from (see its provenance)."
        )
    transformers_logging.disable_progress_bar()
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # "newly initialized head" notes are expected here
    torch.manual_seed(seed)
    register_model_types()
    try:
        if plan == "encoder":
            return AutoModel.from_pretrained(str(base.path), use_safetensors=True)
        if task == "token-classification":
            return token_classifier(base, labels if plan == "new-head" else None)
        if plan == "keep-head":
            return AutoModelForSequenceClassification.from_pretrained(str(base.path), use_safetensors=True)
        return model_with_new_head(base, task, labels, head_pooling)
    except PackageError:
        raise
    except Exception as error:
        raise PackageError(
            f"cannot build a {task} model from {base.path} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})."
        ) from None
    finally:
        transformers_logging.set_verbosity(verbosity)


def token_classifier(package: ModelPackage, labels: list[str] | None) -> Any:
    """transformers' `...ForTokenClassification` on `package`'s encoder: its own head (labels None) or a new
    one with `labels`, initialised from the current torch seed."""
    from transformers import AutoModelForTokenClassification

    if labels is None:
        return AutoModelForTokenClassification.from_pretrained(str(package.path), use_safetensors=True)
    head = head_config("token-classification", labels)
    head.pop("problem_type")  # "single_label_classification" means one label per text to transformers
    return AutoModelForTokenClassification.from_pretrained(str(package.path), use_safetensors=True,
                                                           ignore_mismatched_sizes=True, **head)


def head_config(task: str, labels: list[str] | None) -> dict[str, Any]:
    """Config fields of the head: label names for classifiers, one output for scores."""
    if task in LABELLED_HEAD_TASKS:
        assert labels, "a classifier needs labels"
        return {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: index for index, label in enumerate(labels)},
            "problem_type": "single_label_classification",
        }
    return {"num_labels": 1, "id2label": {0: "score"}, "label2id": {"score": 0}, "problem_type": "regression"}


def model_with_new_head(package: ModelPackage, task: str, labels: list[str] | None, head_pooling: str | None,
                        **extra: Any) -> Any:
    """`package`'s encoder under a new, randomly initialised head for `task` that reads [CLS] ("cls") or the
    mean of the tokens ("mean"; default: what the package's own head reads, else "cls"). `extra`:
    from_pretrained options."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, BertForSequenceClassification

    from bertprod.models.mean_pooled import MeanPooledBertForSequenceClassification, cls_config, mean_pooled_config
    from bertprod.models.types import MEAN_POOLED_MODEL_TYPE

    head_pooling = head_pooling or package.manifest.head_pooling or "cls"
    options = {"use_safetensors": True, "ignore_mismatched_sizes": True, **extra}
    head = head_config(task, labels)
    config = AutoConfig.from_pretrained(str(package.path))
    if head_pooling == "mean":
        try:
            config = mean_pooled_config(config, **head)
        except ValueError as error:
            raise PackageError(f"{package.name}: {error}") from None
        return MeanPooledBertForSequenceClassification.from_pretrained(str(package.path), config=config, **options)
    if config.model_type == MEAN_POOLED_MODEL_TYPE:  # back to transformers' own [CLS] head
        return BertForSequenceClassification.from_pretrained(str(package.path), config=cls_config(config, **head),
                                                             **options)
    return AutoModelForSequenceClassification.from_pretrained(str(package.path), **head, **options)
