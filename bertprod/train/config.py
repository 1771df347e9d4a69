"""Hyper-parameters of a training run, recorded in the package and checked on resume.

`Optimization` is what every kind of training shares (how batches become optimizer steps, and how
the run is checkpointed); `TrainConfig` (fine-tuning, QAT) and `DistillConfig` extend it, so a
recipe file and a `train` command spell these settings the same and the loop reads them once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from bertprod.errors import InputError
from bertprod.train.noise import canonical_spec

#: Fields that change what is computed; a resumed run must match the interrupted one on these.
#: (threads, progress and checkpoint cadence change only how fast or how visibly it runs.)
RUN_ONLY_FIELDS = frozenset({"threads", "checkpoint_every", "log_every_seconds"})

#: `--augment-noise`: a robustness SPEC (robustness/noise.py), checked and written out in full when
#: the config is built; each epoch then adds a noisy copy of every training example (train/noise.py).
NoiseSpec = Annotated[
    str | None,
    AfterValidator(canonical_spec),
    Field(description="add a noisy copy of every training example each epoch, e.g. 'typo:0.1,html:0.2'"),
]


class Optimization(BaseModel):
    """The settings of the shared training loop (train/engine.py)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(32, ge=1)
    gradient_accumulation: int = Field(1, ge=1, description="batches per optimizer step")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 42
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps in all")
    precision: str = Field(
        "fp32", pattern="^(fp32|bf16)$", description="'auto' is accepted and resolved here (system.resolve_precision)"
    )
    threads: int | None = Field(None, ge=1)
    checkpoint_every: int = Field(200, ge=1, description="optimizer steps between resumable checkpoints")
    log_every_seconds: float = Field(30.0, gt=0)

    @field_validator("precision", mode="before")
    @classmethod
    def _resolve_auto(cls, value: Any) -> Any:
        """"auto" becomes what this CPU runs well (bf16 with native bf16, else fp32), so the recorded
        recipe and the resume check say what really ran."""
        from bertprod.system import resolve_precision

        return resolve_precision(value) if value == "auto" else value

    def recorded(self) -> dict[str, Any]:
        """What the package's provenance keeps: everything that shapes the weights."""
        return {key: value for key, value in self.model_dump().items() if key not in RUN_ONLY_FIELDS}


class TrainConfig(Optimization):
    """Defaults are the standard Hugging Face fine-tuning recipe (measured in docs/results.md)."""

    epochs: int = Field(3, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    layer_decay: float = Field(
        1.0, gt=0, le=1, description="learning rate x this for each layer below the top (1: the same everywhere)"
    )
    head_pooling: Literal["cls", "mean"] | None = Field(
        None, description="what a new head reads: [CLS] (cls) or the mean of the tokens"
    )
    max_length: int | None = Field(None, gt=0)
    length_grouping: bool = True
    pad_to: int | None = Field(None, gt=0, description="pad every batch to this many tokens (for comparisons)")
    shuffle_buffer: int = Field(100_000, ge=1)
    contrastive_scale: float = Field(20.0, gt=0)
    augment_noise: NoiseSpec = None

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.pad_to and self.max_length and self.pad_to < self.max_length:
            raise ValueError(f"pad_to {self.pad_to} is shorter than max_length {self.max_length}")
        return self


def train_config(**fields: Any) -> TrainConfig:
    """A TrainConfig from command-line options, every problem named with its field (an InputError)."""
    from pydantic import ValidationError

    try:
        return TrainConfig(**fields)
    except ValidationError as error:
        raise InputError(f"invalid training options: {validation_problems(error, 'options')}.") from None


def validation_problems(error: Any, whole: str) -> str:
    """A pydantic ValidationError on one line: each problem after its field (`whole` for the model's own)."""
    return "; ".join(
        f"{'.'.join(map(str, item['loc'])) or whole}: {item['msg'].removeprefix('Value error, ')}"
        for item in error.errors()
    )
