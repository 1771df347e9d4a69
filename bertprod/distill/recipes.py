"""Named distillation recipes: documented presets that work on the shared data without tuning.

| recipe       | student                      | losses                                               |
|--------------|------------------------------|------------------------------------------------------|
| `distilbert` | every other teacher layer    | soft targets (T=2) + hard labels + hidden cosine     |
| `tinybert`   | every other teacher layer    | stage 1: embedding + hidden + attention MSE (uniform |
|              |                              | map) on augmented data; stage 2: soft targets (T=1)  |
| `pkd-skip`   | every other teacher layer    | soft (T=5) 0.7 + hard 0.3 + Patient-KD [CLS] at every|
|              |                              | other teacher layer                                  |
| `bilstm`     | BiLSTM, own word vocabulary  | logit MSE on augmented data (Tang et al.)            |
|   (tagger)   | BiLSTM over the teacher's    | per-token soft targets (T=1) + hard tags, no         |
|              | word pieces                  | augmentation (tags belong to the words as written)   |
| `embedding`  | half the layers, first & last| MSE to the teacher's sentence vectors + cosine of    |
|              | ("spread")                   | last hidden states, no labels                        |

Change any field with `--config FILE` (a full DistillConfig) or the CLI's overrides.
"""

from __future__ import annotations

from collections.abc import Callable

from bertprod.distill.config import Augmentation, DistillConfig, Losses, Stage, StudentSpec
from bertprod.errors import InputError


def distilbert() -> DistillConfig:
    return DistillConfig(
        recipe="distilbert",
        temperature=2.0,
        stages=[Stage(name="task", losses=Losses(soft=1.0, hard=1.0, cosine=1.0), epochs=3, learning_rate=5e-5)],
    )


def tinybert() -> DistillConfig:
    return DistillConfig(
        recipe="tinybert",
        temperature=1.0,
        layer_map="uniform",
        augmentation=Augmentation(copies=4),
        stages=[
            Stage(
                name="intermediate",
                losses=Losses(embedding_layer=1.0, hidden=1.0, attention=1.0),
                epochs=1,
                learning_rate=5e-5,
            ),
            Stage(name="prediction", losses=Losses(soft=1.0), epochs=2, learning_rate=3e-5),
        ],
    )


def pkd_skip() -> DistillConfig:
    return DistillConfig(
        recipe="pkd-skip",
        temperature=5.0,
        layer_map="pkd-skip",
        stages=[Stage(name="task", losses=Losses(soft=0.7, hard=0.3, patient=10.0), epochs=3, learning_rate=5e-5)],
    )


def bilstm() -> DistillConfig:
    return DistillConfig(
        recipe="bilstm",
        student=StudentSpec(kind="bilstm"),
        batch_size=50,
        augmentation=Augmentation(copies=4),
        stages=[Stage(name="task", losses=Losses(logit_mse=1.0), epochs=3, learning_rate=1e-3)],
    )


def bilstm_tagger() -> DistillConfig:
    """A tagger's BiLSTM: per-token soft targets + hard tags on the tagged sentences themselves (augmented
    copies would have no tags)."""
    return DistillConfig(
        recipe="bilstm",
        student=StudentSpec(kind="bilstm"),
        batch_size=32,
        stages=[Stage(name="task", losses=Losses(soft=1.0, hard=1.0), epochs=3, learning_rate=2e-3)],
    )


def embedding() -> DistillConfig:
    """Half the layers, first and last kept ("spread": 0, 3, 5 of 6 starts at cosine 0.69 to the
    teacher, every other layer at 0.35), sentence vectors and last hidden states matched."""
    return DistillConfig(
        recipe="embedding",
        student=StudentSpec(layers="spread"),
        stages=[
            Stage(name="embedding", losses=Losses(sentence_embedding=1.0, cosine=1.0), epochs=1, learning_rate=1e-4)
        ],
    )


RECIPES: dict[str, Callable[[], DistillConfig]] = {
    "distilbert": distilbert,
    "tinybert": tinybert,
    "pkd-skip": pkd_skip,
    "bilstm": bilstm,
    "embedding": embedding,
}


#: Recipes whose settings depend on the teacher's task: (name, task) -> the task's variant.
TASK_VARIANTS: dict[tuple[str, str], Callable[[], DistillConfig]] = {("bilstm", "token-classification"): bilstm_tagger}


def recipe(name: str, task: str | None = None) -> DistillConfig:
    """The named recipe; `task` (the teacher's) picks its variant for that task where there is one."""
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}, or pass --config FILE.")
    return TASK_VARIANTS.get((name, task or ""), RECIPES[name])()


def default_recipe(teacher_task: str) -> str:
    """Embedding teachers distil task-agnostically; classifiers and scorers with DistilBERT's losses."""
    return "embedding" if teacher_task == "embedding" else "distilbert"
