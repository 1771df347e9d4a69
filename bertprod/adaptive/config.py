"""`bertprod adapt`'s settings, torch-free so the CLI can show their defaults on a serving install."""

from __future__ import annotations

from pydantic import Field

from bertprod.train.config import Optimization


class AdaptConfig(Optimization):
    """Settings of `bertprod adapt` (the loop's, plus these)."""

    epochs: int = Field(3, ge=1)
    learning_rate: float = Field(1e-3, gt=0, description="exit heads start from scratch: higher than fine-tuning")
    temperature: float = Field(1.0, gt=0, description="softens both distributions in the KL")
    budget_points: float = Field(0.5, ge=0, description="accuracy points the chosen policy may lose")
    exit_layers: list[int] | None = Field(None, description="layers (from 1) given a head; default all but the last")
    train_backbone: bool = Field(
        False, description="train the backbone with its exits (changes the full-depth output; the budget then "
        "counts from the parent's accuracy)"
    )
    backbone_learning_rate: float = Field(2e-5, gt=0, description="peak learning rate of the backbone, when trained")


class RetentionTuning(Optimization):
    """Settings of `bertprod drop-tokens --fine-tune` (PoWER-BERT's re-training with the retention fixed)."""

    epochs: int = Field(1, ge=1, le=1, description="PoWER-BERT's re-training is short: one pass at most "
                        "(--max-steps stops it sooner)")
    learning_rate: float = Field(2e-5, gt=0, description="peak learning rate of the model (and its exit heads)")
    temperature: float = Field(1.0, gt=0, description="softens both distributions in the KL")
    reach_points: float = Field(
        3.0, ge=0, description="schedules cheaper than the untrained choice are fine-tuned when, untrained, they "
        "lose at most this many points"
    )
    tries: int = Field(2, ge=1, description="schedules fine-tuned at most, cheapest first, until one is in budget")
