#!/usr/bin/env python
"""
Validate a digit dataset root before training and print a report:

    python tools/check_dataset.py datasets/digits

Checks ROOT/train + train.json, ROOT/valid (or val) + valid.json and ROOT/test: every image is
decoded, every json entry and box checked. Exits with status 1 if there are errors; warnings
(handled by the loaders, e.g. boxes clipped at the edge or RGBA images) are counted.
"""

from digit_detectron.data.prepare.check import check_dataset
from digit_detectron.utils.cli import argument_parser, run_tool


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("root", help="dataset root (what $DIGITS_DATASET_ROOT points at)")
    parser.add_argument("--max-examples", type=int, default=5, help="findings listed per kind")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    report = check_dataset(args.root)
    print(report.format(args.max_examples))
    return 1 if report.errors else 0


if __name__ == "__main__":
    run_tool(main)
