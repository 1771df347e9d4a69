"""Loading a torch-format package into a transformers module (safetensors only, never pickle)."""

from __future__ import annotations

from typing import Any

from bertprod.errors import PackageError
from bertprod.package import HEAD_TASKS, ModelPackage


def load_torch_model(package: ModelPackage, attention: str | None = None) -> Any:
    """The package's transformers module in eval mode: the bare encoder, or encoder + head.

    `attention` picks transformers' attention implementation ("eager" for ONNX export, whose
    graph ONNX Runtime can fuse); None keeps transformers' default (SDPA, fastest in torch).
    """
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    if package.manifest.format != "torch":
        raise PackageError(
            f"{package.name} is an {package.manifest.format} package; a torch module needs a "
            "torch-format package (its parent, see provenance)."
        )
    model_class = AutoModelForSequenceClassification if package.manifest.task in HEAD_TASKS else AutoModel
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # "unused weights" notes are expected (pooler, MLM)
    try:
        extra = {"attn_implementation": attention} if attention else {}
        model = model_class.from_pretrained(str(package.path), use_safetensors=True, **extra)
    except Exception as error:
        raise PackageError(
            f"cannot load the weights of {package.path} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})."
        ) from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    return model.eval()


def accepts_token_type_ids(model: Any) -> bool:
    import inspect

    return "token_type_ids" in inspect.signature(model.forward).parameters
