"""Offline analysis behind the tools: anchor coverage, speed benchmarks, experiment runs, prediction drawings."""
