#!/usr/bin/env python
"""
Report how a config's RPN anchors fit a dataset's boxes after the config's resize:

    python tools/analyze_anchors.py --config-file configs/digits_cpu.yaml \\
        --json ../shared/svhn_geometry/train.json --max-images 5000 --output output/anchors

Prints box size / aspect percentiles at the network input, the share of boxes whose best anchor
reaches the RPN foreground IoU (MODEL.RPN.IOU_THRESHOLDS[-1]) and 0.5, the best level / aspect
ratio / size shares, and suggested anchor sizes and ratios. Trailing KEY VALUE pairs override the
config, e.g. ``INPUT.MIN_SIZE_TEST 800 INPUT.MAX_SIZE_TEST 1333``.
"""

import argparse
import os

import numpy as np

from digit_detectron import get_digit_cfg
from digit_detectron.analysis.anchors import analyze_anchors, format_report
from digit_detectron.data import load_digits_json
from digit_detectron.data.datasets import get_dataset_dicts
from digit_detectron.utils.cli import argument_parser, run_tool
from digit_detectron.utils.io import atomic_write_json


def load_records(args, cfg):
    if args.json:
        return load_digits_json(args.json, os.path.dirname(args.json)), args.json
    name = args.dataset or cfg.DATASETS.TRAIN[0]
    return get_dataset_dicts(name), name


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", help="registered dataset name (default: the config's first DATASETS.TRAIN)")
    source.add_argument("--json", help="COCO digit json; only its image sizes and boxes are read")
    parser.add_argument(
        "--max-images", type=int, default=0, help="analyse a random sample of this many images (0: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max-images sample")
    parser.add_argument("--digit", type=int, choices=range(10), help="analyse only the boxes of this digit")
    parser.add_argument("--no-train", action="store_true", help="skip the INPUT.MIN_SIZE_TRAIN resizes")
    parser.add_argument("--output", help="folder for the report as JSON (anchor_analysis.json)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    cfg = get_digit_cfg(args.config_file, args.opts)
    records, source_name = load_records(args, cfg)
    if args.digit is not None:
        records = [
            dict(r, annotations=[a for a in r["annotations"] if a["category_id"] == args.digit]) for r in records
        ]
        records = [r for r in records if r["annotations"]]
        source_name += f" (digit {args.digit})"
    total = len(records)
    if 0 < args.max_images < total:
        keep = np.random.default_rng(args.seed).choice(total, args.max_images, replace=False)
        records = [records[i] for i in sorted(keep)]
    report = analyze_anchors(cfg, records, train=not args.no_train)
    report = {"config": args.config_file, "opts": args.opts, "source": source_name, "source_images": total, **report}
    print(f"{args.config_file} {' '.join(args.opts)} on {source_name}")
    print(format_report(report))
    if args.output:
        path = os.path.join(args.output, "anchor_analysis.json")
        atomic_write_json(path, report, indent=2)
        print(f"report written to {path}")
    return report


if __name__ == "__main__":
    run_tool(main)
