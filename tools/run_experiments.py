#!/usr/bin/env python
"""
Train every run of an experiments file (see ``digit_detectron.analysis.experiments.load_experiments``) on the same
data, then write a table (AP, accuracy, images/s, minutes) and a figure comparing them::

    python tools/run_experiments.py benchmarks/recipe_candidates.yaml --output-dir output/recipe

Runs go one after another (timings are comparable only on an otherwise idle machine). A finished run
(``model_final.pth``) is kept; an interrupted one resumes from its last checkpoint.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from digit_detectron.analysis.experiments import load_experiments, summarize_ablation, train_runs  # noqa: E402

TRAIN_NET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_net.py")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", help="YAML file: title, config_file, opts, runs")
    parser.add_argument("--output-dir", default="output/experiments")
    parser.add_argument("--only", nargs="+", help="run (and tabulate) only these runs")
    args = parser.parse_args()

    try:
        title, runs = load_experiments(args.experiments)
    except ValueError as e:
        sys.exit(f"error: {e}")
    if args.only:
        unknown = sorted(set(args.only) - set(runs))
        if unknown:
            sys.exit(f"error: {args.experiments}: no run named {', '.join(unknown)} (runs: {', '.join(runs)})")
        runs = {name: runs[name] for name in args.only}

    metrics = train_runs(runs, args.output_dir, TRAIN_NET)
    md, png = summarize_ablation(metrics, args.output_dir, title=title)
    with open(md) as f:
        print(f.read())
    print(f"Table: {md}\nFigure: {png}")


if __name__ == "__main__":
    main()
