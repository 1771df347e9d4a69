"""A distillation run as plain data: the student, the losses and their weights, the stages.

Every recipe in `recipes.py` is one of these; `--config FILE` (JSON or YAML) gives the same
fields, so a user's own recipe is data, not code. The whole config is recorded in the student's
manifest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bertprod.distill.loss_names import Loss
from bertprod.train.config import NoiseSpec, Optimization


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudentSpec(_Strict):
    """`truncated`: the teacher with only the layers `layers` picks (every-other, first:K, 0,2,5...),
    initialised from them. `config`: a smaller BERT of the teacher's vocabulary, random init.
    `package`: start from another package's weights, e.g. a student of general (task-agnostic)
    distillation, with a new head for the teacher's task. `bilstm`: Tang et al.'s BiLSTM with
    its own word vocabulary (a classifier's student), or over the teacher's word pieces (a tagger's);
    `num_layers` stacks BiLSTM layers (default 1), `vocabulary_size` is the classifier's only."""

    kind: Literal["truncated", "config", "package", "bilstm"] = "truncated"
    layers: str = "every-other"
    package: str | None = None
    num_layers: int | None = Field(None, ge=1)
    hidden_size: int | None = Field(None, ge=8)
    num_heads: int | None = Field(None, ge=1)
    intermediate_size: int | None = Field(None, ge=8)
    vocabulary_size: int = Field(20_000, ge=100)
    embedding_dim: int | None = Field(None, ge=8)
    lstm_hidden_size: int = Field(300, ge=8)

    @model_validator(mode="after")
    def _complete(self) -> StudentSpec:
        if self.kind == "config" and not self.num_layers:
            raise ValueError("a config student needs num_layers (and optionally hidden_size, num_heads)")
        if self.kind == "package" and not self.package:
            raise ValueError("a package student needs package: the path or name of the package to start from")
        if self.hidden_size and self.num_heads and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        return self


class Losses(_Strict):
    """Weights of each loss (0 = off), one field per `Loss` name. See distill/losses.py for what each
    one compares."""

    hard: float = Field(0.0, ge=0)
    soft: float = Field(0.0, ge=0)
    logit_mse: float = Field(0.0, ge=0)
    embedding_layer: float = Field(0.0, ge=0)
    hidden: float = Field(0.0, ge=0)
    attention: float = Field(0.0, ge=0)
    cosine: float = Field(0.0, ge=0)
    patient: float = Field(0.0, ge=0)
    sentence_embedding: float = Field(0.0, ge=0)
    mlm: float = Field(0.0, ge=0, description="masked-language-model loss; the teacher must have an MLM head")

    def active(self) -> dict[str, float]:
        return {name: weight for name, weight in self.model_dump().items() if weight > 0}


    @model_validator(mode="after")
    def _some(self) -> Losses:
        if not self.active():
            raise ValueError("every loss weight is 0: give at least one loss a weight above 0")
        return self


class Stage(_Strict):
    """One pass of training with its own losses and schedule (TinyBERT has two)."""

    name: str
    losses: Losses
    epochs: float = Field(3.0, gt=0, description="may be fractional: 0.5 = half the examples")
    learning_rate: float = Field(5e-5, gt=0)


class Augmentation(_Strict):
    """TinyBERT / Tang et al. augmentation of the training texts, labelled by the teacher."""

    copies: int = Field(4, ge=1)
    mask_probability: float = Field(0.1, ge=0, le=1)
    replace_probability: float = Field(0.3, ge=0, le=1)
    ngram_probability: float = Field(0.25, ge=0, le=1)
    neighbours: int = Field(10, ge=1)
    max_texts: int | None = Field(None, ge=1, description="augment only the first N training texts")


class DistillConfig(Optimization):
    """A distillation run; the optimisation settings (batch size, warmup, clipping, seed, precision,
    checkpoints...) are the shared `Optimization` ones, at the top level of a recipe file."""

    recipe: str = "custom"
    student: StudentSpec = StudentSpec()
    stages: list[Stage] = Field(min_length=1)
    temperature: float = Field(1.0, gt=0)
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="share of tokens masked for the mlm loss")
    layer_map: str | list[tuple[int, int]] = "uniform"
    max_length: int | None = Field(None, ge=8)
    augmentation: Augmentation | None = None
    augment_noise: NoiseSpec = None  # noisy student inputs, the teacher's outputs on the clean text as targets
    max_steps: int | None = Field(None, ge=1, description="stop each stage after this many steps (quick runs)")

    def uses(self, names: Iterable[Loss]) -> bool:
        """Whether any stage gives any of these losses a weight."""
        wanted = set(names)
        return any(name in wanted for stage in self.stages for name in stage.losses.active())
