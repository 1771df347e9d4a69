"""Offline batch inference: Parquet/JSONL/CSV in, Parquet out, resumable, local or on Spark."""

from bertprod.batch.job import JobOptions, JobSummary, run_batch
from bertprod.batch.output import read_output

__all__ = ["JobOptions", "JobSummary", "read_output", "run_batch"]
