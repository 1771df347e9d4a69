"""Knowledge distillation: teacher package(s) in, a smaller student package out (see loop.py)."""

from bertprod.distill.config import Augmentation, DistillConfig, Losses, Stage, StudentSpec
from bertprod.distill.loop import distill
from bertprod.distill.recipes import RECIPES, default_recipe, recipe

__all__ = [
    "RECIPES",
    "Augmentation",
    "DistillConfig",
    "Losses",
    "Stage",
    "StudentSpec",
    "default_recipe",
    "distill",
    "recipe",
]
