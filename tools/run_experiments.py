#!/usr/bin/env python
"""
Train every run of an experiments file (see ``digit_detectron.analysis.experiments.load_experiments``) on the same
data, then write a table (AP, accuracy, images/s, minutes) and a figure comparing them::

    python tools/run_experiments.py benchmarks/recipe_candidates.yaml --output output/recipe

Runs go one after another (timings are comparable only on an otherwise idle machine). A finished run
(``model_final.pth``) is kept; an interrupted one resumes from its last checkpoint.
"""

import os

from digit_detectron.analysis.experiments import load_experiments, train_and_summarize
from digit_detectron.utils.cli import argument_parser, run_tool, setup_logging

TRAIN_NET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_net.py")


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("experiments", help="YAML file: title, config_file, opts, runs")
    parser.add_argument("--output", default="output/experiments", help="folder for the runs, table and figure")
    parser.add_argument("--only", nargs="+", help="run (and tabulate) only these runs")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    title, runs = load_experiments(args.experiments)
    if args.only:
        unknown = sorted(set(args.only) - set(runs))
        if unknown:
            raise ValueError(f"{args.experiments}: no run named {', '.join(unknown)} (runs: {', '.join(runs)})")
        runs = {name: runs[name] for name in args.only}

    md, png, text = train_and_summarize(runs, args.output, TRAIN_NET, title)
    print(text)
    return md, png


if __name__ == "__main__":
    run_tool(main)
