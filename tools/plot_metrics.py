#!/usr/bin/env python
"""
Plot a training run's metrics.json: loss terms, learning rate / IoU-loss lambda, validation AP and
number accuracy, wall time. Example::

    python tools/plot_metrics.py output/digits_cpu            # PNGs in output/digits_cpu/plots/
    python tools/plot_metrics.py run/metrics.json --output figs
"""

import os

from digit_detectron.engine.plots import MetricsError, plot_metrics
from digit_detectron.utils.cli import argument_parser, run_tool, setup_logging


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("metrics", help="a training OUTPUT_DIR or its metrics.json")
    parser.add_argument("--output", help="folder for the PNGs (default: plots/ beside metrics.json)")
    parser.add_argument(
        "--iters-per-epoch", type=float, help="draw an epoch axis (default: derived from the logged 'epoch')"
    )
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    metrics = os.path.join(args.metrics, "metrics.json") if os.path.isdir(args.metrics) else args.metrics
    out = args.output or os.path.join(os.path.dirname(os.path.abspath(metrics)), "plots")
    pngs = plot_metrics(metrics, out, iters_per_epoch=args.iters_per_epoch)
    if not pngs:
        raise MetricsError(f"{metrics}: no metric to plot")
    print(f"Wrote {len(pngs)} plots to {out}:")
    for path in pngs:
        print("  " + path)
    return pngs


if __name__ == "__main__":
    run_tool(main)
