#!/usr/bin/env python
"""
Plot a training run's metrics.json: loss terms, learning rate / IoU-loss lambda, validation AP and
number accuracy, wall time. Example::

    python tools/plot_metrics.py output/digits_cpu            # PNGs in output/digits_cpu/plots/
    python tools/plot_metrics.py run/metrics.json --out figs
"""
import argparse
import logging
import os
import sys

from digit_detectron.analysis.plots import MetricsError, plot_metrics


def argument_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", help="a training OUTPUT_DIR or its metrics.json")
    parser.add_argument("--out", help="folder for the PNGs (default: plots/ beside metrics.json)")
    parser.add_argument(
        "--iters-per-epoch", type=float, help="draw an epoch axis (default: derived from the logged 'epoch')"
    )
    return parser


def main(args):
    metrics = os.path.join(args.metrics, "metrics.json") if os.path.isdir(args.metrics) else args.metrics
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(metrics)), "plots")
    try:
        pngs = plot_metrics(metrics, out, iters_per_epoch=args.iters_per_epoch)
    except MetricsError as e:
        sys.exit(f"error: {e}")
    if not pngs:
        sys.exit(f"error: {metrics}: no metric to plot")
    print(f"Wrote {len(pngs)} plots to {out}:")
    for path in pngs:
        print("  " + path)
    return pngs


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    main(argument_parser().parse_args())
