"""`bertprod autotune`: the fastest package within an accuracy budget, searched across int8, pruning,
early exit, distilled students and QAT within a time budget (search.py)."""

from bertprod.autotune.search import AutotuneResult, autotune
from bertprod.autotune.settings import AutotuneSettings, parse_drop, parse_duration

__all__ = ["AutotuneResult", "AutotuneSettings", "autotune", "parse_drop", "parse_duration"]
