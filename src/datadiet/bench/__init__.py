"""Benchmark harness: suites of datasets x methods x seeds, resumable, with reports."""
