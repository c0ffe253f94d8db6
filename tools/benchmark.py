#!/usr/bin/env python
"""Runs digit_detectron/tools/benchmark.py as a script: its logic lives in the package."""

from digit_detectron.tools.benchmark import *  # noqa: F403  (its functions, for scripts that import this file)
from digit_detectron.tools.benchmark import main
from digit_detectron.utils.cli import run_tool

if __name__ == "__main__":
    run_tool(main)
