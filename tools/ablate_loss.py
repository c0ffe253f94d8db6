#!/usr/bin/env python
"""
Train the same config with each IoU-loss type (same data, same seed), then write a table and a
figure comparing AP, AP50, AP75, APs/APm/APl, AR100 and number accuracy per evaluation::

    python tools/ablate_loss.py --config-file configs/digits_cpu.yaml --output output/ablation \\
        SOLVER.EPOCHS 10 MODEL.ROI_BOX_HEAD.IOU_LOSS.START_EPOCH 3

Finished runs are kept; an interrupted run resumes from its last checkpoint.
"""

import argparse
import os

from digit_detectron.analysis.experiments import train_and_summarize
from digit_detectron.utils.cli import argument_parser, run_tool, setup_logging

TRAIN_NET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_net.py")


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", default="output/ablate_loss", help="folder for the runs, table and figure")
    parser.add_argument("--types", nargs="+", default=["none", "diou", "ciou"], help="IOU_LOSS.TYPE values")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs for every run")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()

    runs = {
        loss_type: (
            args.config_file,
            [*args.opts, "MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE", loss_type, "SEED", str(args.seed)],
        )
        for loss_type in args.types
    }
    md, png, text = train_and_summarize(
        runs, args.output, TRAIN_NET, f"IoU loss ablation ({os.path.basename(args.config_file)})"
    )
    print(text)
    return md, png


if __name__ == "__main__":
    run_tool(main)
