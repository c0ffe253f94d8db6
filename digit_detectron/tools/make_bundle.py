#!/usr/bin/env python
"""
Make a model bundle from a plain checkpoint and the config it was trained with (for checkpoints
written before bundles, or by detectron2 itself)::

    python tools/make_bundle.py --weights old/model_best.pth --config-file configs/digits_cpu.yaml \\
        --output old/bundle [KEY VALUE ...]

Writes OUT/<name>.pth (default: the checkpoint's own file name): the weights with the merged config
embedded, so that ``--weights OUT/<name>.pth`` alone runs it. The config must build a model the
weights fit (checked by loading them strictly).
"""

import argparse
import os

from detectron2.modeling import build_model

from digit_detectron import get_digit_cfg
from digit_detectron.checkpoint import DigitCheckpointer
from digit_detectron.checkpoint.bundle import write_bundle
from digit_detectron.utils.cli import argument_parser, run_tool, setup_logging
from digit_detectron.utils.io import ensure_writable_dir


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("--weights", required=True, help="the plain checkpoint (.pth)")
    parser.add_argument("--config-file", action="append", required=True, metavar="FILE", help="its config; repeatable")
    parser.add_argument("--output", required=True, help="folder for the bundle")
    parser.add_argument("--name", default=None, help="bundle file name without .pth (default: the checkpoint's)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    cfg = get_digit_cfg(args.config_file, args.opts)
    model = build_model(cfg)
    DigitCheckpointer(model, strict=True).load(args.weights)  # the config must fit the weights
    ensure_writable_dir(args.output)
    name = args.name or os.path.splitext(os.path.basename(args.weights))[0]
    path = write_bundle(os.path.join(args.output, f"{name}.pth"), args.weights, cfg)
    print(f"Wrote the bundle {path} (weights of {args.weights}, config of {', '.join(args.config_file)})")
    return path


if __name__ == "__main__":
    run_tool(main)
