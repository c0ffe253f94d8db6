#!/usr/bin/env python
"""
Report how a config's RPN anchors fit a dataset's boxes after the config's resize:

    python tools/analyze_anchors.py --config-file configs/digits_cpu.yaml \\
        --json ../shared/svhn_geometry/train.json --max-images 5000 --output anchors.json

Prints box size / aspect percentiles at the network input, the share of boxes whose best anchor
reaches the RPN foreground IoU (MODEL.RPN.IOU_THRESHOLDS[-1]) and 0.5, the best level / aspect
ratio / size shares, and suggested anchor sizes and ratios. Trailing KEY VALUE pairs override the
config, e.g. ``INPUT.MIN_SIZE_TEST 800 INPUT.MAX_SIZE_TEST 1333``.
"""

import argparse
import os
import sys

import numpy as np

from digit_detectron import get_digit_cfg
from digit_detectron.analysis.anchors import analyze_anchors, format_report
from digit_detectron.data import DatasetError, load_digits_json
from digit_detectron.utils.io import atomic_write_json


def load_records(args, cfg):
    if args.json:
        return load_digits_json(args.json, os.path.dirname(args.json)), args.json
    from detectron2.data import DatasetCatalog

    name = args.dataset or cfg.DATASETS.TRAIN[0]
    if name not in DatasetCatalog.list():
        raise DatasetError(f"dataset '{name}' is not registered (registered digits sets: digits_train, digits_valid)")
    return DatasetCatalog.get(name), name


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", help="registered dataset name (default: the config's first DATASETS.TRAIN)")
    source.add_argument("--json", help="COCO digit json; only its image sizes and boxes are read")
    parser.add_argument(
        "--max-images", type=int, default=0, help="analyse a random sample of this many images (0: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max-images sample")
    parser.add_argument("--no-train", action="store_true", help="skip the INPUT.MIN_SIZE_TRAIN resizes")
    parser.add_argument("--output", help="write the report as JSON here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    args = parser.parse_args(argv)

    try:
        cfg = get_digit_cfg(args.config_file, args.opts)
    except (AssertionError, KeyError, ValueError, FileNotFoundError) as e:
        sys.exit(f"analyze_anchors: bad --config-file or KEY VALUE overrides {args.opts} ({e}); options go first")
    try:
        records, source_name = load_records(args, cfg)
        total = len(records)
        if 0 < args.max_images < total:
            keep = np.random.default_rng(args.seed).choice(total, args.max_images, replace=False)
            records = [records[i] for i in sorted(keep)]
        report = analyze_anchors(cfg, records, train=not args.no_train)
    except (DatasetError, ValueError) as e:
        sys.exit(f"analyze_anchors: {e}")
    report = {"config": args.config_file, "opts": args.opts, "source": source_name, "source_images": total, **report}
    print(f"{args.config_file} {' '.join(args.opts)} on {source_name}")
    print(format_report(report))
    if args.output:
        atomic_write_json(args.output, report, indent=2)
        print(f"report written to {args.output}")


if __name__ == "__main__":
    main()
