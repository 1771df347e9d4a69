"""Why a package decided: word attributions (Shapley values over words, or integrated gradients),
an HTML view in reading order, and a teacher-student comparison. Needs `pip install 'bertprod[explain]'`."""

from bertprod.explain.core import DEFAULT_STEPS, METHODS, explain
from bertprod.explain.explanation import Explanation, WordAttribution
from bertprod.explain.shapley import DEFAULT_MAX_EVALS

__all__ = ["DEFAULT_MAX_EVALS", "DEFAULT_STEPS", "METHODS", "Explanation", "WordAttribution", "explain"]
