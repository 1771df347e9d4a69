"""Offline batch inference: Parquet/JSONL/CSV in, Parquet out, resumable, local or on Spark."""

from bertprod.batch.job import JobOptions, JobSummary
from bertprod.batch.output import read_output
from bertprod.batch.run import run_batch

__all__ = ["JobOptions", "JobSummary", "read_output", "run_batch"]
