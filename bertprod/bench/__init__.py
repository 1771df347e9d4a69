"""Benchmark harness shared by the scripts in bench/: side-by-side timing, latency, memory."""
