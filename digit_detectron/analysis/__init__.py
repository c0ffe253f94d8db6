"""Offline analysis behind the tools: anchor coverage, speed benchmarks, experiment runs, plots, drawings."""
