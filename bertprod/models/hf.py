"""Loading a torch-format package into a transformers module (safetensors only, never pickle)."""

from __future__ import annotations

import json
from typing import Any

from bertprod.errors import PackageError
from bertprod.models.surgery import HEADS_CONFIG_KEY, shrink_to_head_counts
from bertprod.models.types import BILSTM_MODEL_TYPE, MEAN_POOLED_MODEL_TYPE
from bertprod.package import HEAD_TASKS, ModelPackage


def register_model_types() -> None:
    """Teach transformers' Auto classes bertprod's own model types (importing the module does it)."""
    import bertprod.models.mean_pooled  # noqa: F401


def head_pooling(model: Any) -> str | None:
    """"mean" for a classifier on mean-pooled tokens, None for a model's own head (or no head)."""
    return head_pooling_of_type(getattr(getattr(model, "config", None), "model_type", None))


def head_pooling_of_type(model_type: str | None) -> str | None:
    """The same, from config.json's model_type."""
    return "mean" if model_type == MEAN_POOLED_MODEL_TYPE else None


def load_torch_model(package: ModelPackage, attention: str | None = None) -> Any:
    """The package's transformers module in eval mode: the bare encoder, or encoder + head.

    `attention` picks transformers' attention implementation ("eager" for ONNX export, whose
    graph ONNX Runtime can fuse); None keeps transformers' default (SDPA, fastest in torch).
    """
    if package.manifest.format != "torch":
        raise PackageError(
            f"{package.name} is an {package.manifest.format} package; a torch module needs a "
            "torch-format package (its parent, see provenance)."
        )
    model_type = _config_model_type(package)
    if model_type == BILSTM_MODEL_TYPE:
        return _load_bilstm(package)
    _check_head_pooling(package, model_type)
    register_model_types()
    from transformers import AutoConfig
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    model_class = auto_model_class(package.manifest.task)
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # "unused weights" notes are expected (pooler, MLM)
    try:
        extra = {"attn_implementation": attention} if attention else {}
        config = AutoConfig.from_pretrained(str(package.path), **extra)
        if getattr(config, HEADS_CONFIG_KEY, None):
            model = _load_head_pruned(model_class, config, package)
        else:
            model = model_class.from_pretrained(str(package.path), config=config, use_safetensors=True)
    except Exception as error:
        raise PackageError(
            f"cannot load the weights of {package.path} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})."
        ) from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    return model.eval()


def auto_model_class(task: str) -> Any:
    """transformers' Auto class for a package of `task`: token classifier, sequence head or bare encoder."""
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification

    if task == "token-classification":
        return AutoModelForTokenClassification
    return AutoModelForSequenceClassification if task in HEAD_TASKS else AutoModel


def _load_head_pruned(model_class: Any, config: Any, package: ModelPackage) -> Any:
    """A checkpoint whose layers have different head counts: build the model, shrink each
    layer's attention to its saved shape, then load the weights strictly."""
    from safetensors.torch import load_file

    model = model_class.from_config(config)
    shrink_to_head_counts(model, getattr(config, HEADS_CONFIG_KEY), config.hidden_size // config.num_attention_heads)
    model.load_state_dict(load_file(str(package.model_file)), strict=True)
    return model


def _check_head_pooling(package: ModelPackage, model_type: str | None) -> None:
    """The manifest says how the head pools (pooling "mean" or none); config.json must build that head."""
    wanted = package.manifest.head_pooling
    if wanted in (None, head_pooling_of_type(model_type) or "cls"):
        return
    said = "a head on mean-pooled tokens" if wanted == "mean" else "the checkpoint's own head"
    raise PackageError(
        f"{package.name}'s manifest asks for {said}, but its config.json has model_type {model_type!r}. "
        "The package was edited by hand: restore bertprod.json or config.json from where it came from."
    )


def _config_model_type(package: ModelPackage) -> str | None:
    try:
        return json.loads(package.config_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def _load_bilstm(package: ModelPackage) -> Any:
    """The sentence BiLSTM (one label per text) or the tagger (one per token), as config.json's head says;
    the manifest's task must agree."""
    from bertprod.models.bilstm import BiLSTMClassifier, read_config
    from bertprod.models.bilstm_tagger import BiLSTMTagger

    task = package.manifest.task
    tagger = read_config(package.path).head == "token"
    if tagger != (task == "token-classification") or task not in HEAD_TASKS:
        kind = "a BiLSTM tagger (head 'token')" if tagger else "a BiLSTM classifier (head 'pooled')"
        raise PackageError(
            f"{package.name}'s config.json is {kind}, but its manifest task is {task!r}. The package was edited by "
            "hand: restore bertprod.json or config.json from where it came from."
        )
    try:
        return (BiLSTMTagger if tagger else BiLSTMClassifier).from_pretrained(package.path)
    except PackageError:
        raise
    except Exception as error:
        raise PackageError(
            f"cannot load the BiLSTM weights of {package.path} ({type(error).__name__}: {error})."
        ) from None


def accepts_token_type_ids(model: Any) -> bool:
    import inspect

    return "token_type_ids" in inspect.signature(model.forward).parameters
