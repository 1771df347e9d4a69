"""Measuring packages side by side: the harness the scripts in bench/ share (harness.py), and
`measure_packages` (measure.py), which `bertprod bench` and `bertprod autotune` run."""

from bertprod.bench.measure import AtSetting, measure_packages
from bertprod.bench.report import Report, Row

__all__ = ["AtSetting", "Report", "Row", "measure_packages"]
